"""The Aadhaar eSign adapter against a stand-in ESP speaking eSign API 2.1: a signed request goes
out with the document's hash only, the ESP's XML-signed answer and its PKCS#7 signature are
checked, and every way an answer can be wrong is refused."""

from __future__ import annotations

import base64
import hashlib
import uuid

import httpx
import pytest
from lxml import etree
from pydantic import SecretStr

from carebase.platform.errors import DomainError
from carebase.prescribing import esign
from carebase.settings import Settings
from tests.conftest import run_db
from tests.standins.esp import EspStandIn, key_and_certificate, pem

ASP_KEY, ASP_CERT = key_and_certificate("Carebase ASP")
DOCUMENT = hashlib.sha256(b'{"prescription_id": "rx-1", "items": [{"medicine": "paracetamol"}]}').hexdigest()


@pytest.fixture(scope="module")
def esp():
    with EspStandIn(ASP_CERT) as standin:
        yield standin


def _adapter(esp: EspStandIn, **changes) -> esign.AadhaarEsign:
    values = {"esign_provider": "aadhaar", "esign_esp_url": f"{esp.url}/esign/2.1/signdoc",
              "esign_asp_id": "CAREBASE01",
              "esign_asp_key": SecretStr(pem(ASP_KEY)), "esign_asp_certificate": pem(ASP_CERT),
              "esign_esp_certificate": pem(esp.esp_certificate), "public_url": "https://clinic.example.in", **changes}
    return esign.provider(Settings(**values))


def _round_trip(adapter: esign.AadhaarEsign, txn: str, document: str = DOCUMENT) -> str:
    """What the browser does: post the form to the ESP, bring its answer back."""
    req = adapter.request(document_sha256=document, doc_info="Prescription rx-1", txn=txn)
    r = httpx.post(req.url, data=req.fields)
    assert r.status_code == 200
    return r.text


def test_a_prescription_hash_is_signed_and_every_part_of_the_answer_checked(esp):
    adapter = _adapter(esp)
    req = adapter.request(document_sha256=DOCUMENT, doc_info="Prescription rx-1", txn="txn-1")
    request_xml = etree.fromstring(req.fields["eSignRequest"].encode())
    assert request_xml.tag == "Esign" and request_xml.get("ver") == "2.1" and request_xml.get("aspId") == "CAREBASE01"
    assert request_xml.findtext("Docs/InputHash") == DOCUMENT  # the hash, never the prescription
    assert request_xml.get("responseUrl") == "https://clinic.example.in/api/v1/esign/response"
    assert request_xml.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is not None
    answer = httpx.post(req.url, data=req.fields).text
    result = adapter.complete(answer, txn="txn-1", document_sha256=DOCUMENT)
    assert result.txn == "txn-1" and result.signer_name == "Meera Iyer"
    assert result.signer_certificate_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert base64.b64decode(result.signature_pkcs7)[:1] == b"\x30"  # DER


def test_an_answer_for_another_document_or_transaction_is_refused(esp):
    adapter = _adapter(esp)
    answer = _round_trip(adapter, "txn-2")
    with pytest.raises(esign.EsignFailed) as wrong_txn:
        adapter.complete(answer, txn="txn-other", document_sha256=DOCUMENT)
    assert wrong_txn.value.code == "esign-bad-response"
    with pytest.raises(esign.EsignFailed) as wrong_doc:
        adapter.complete(answer, txn="txn-2", document_sha256=hashlib.sha256(b"another").hexdigest())
    assert wrong_doc.value.code == "esign-wrong-document"
    # An ESP that signs something else than it was asked to (a bug, or worse) is caught too.
    esp.sign_instead = hashlib.sha256(b"something else").digest()
    try:
        answer = _round_trip(adapter, "txn-3")
    finally:
        esp.sign_instead = None
    with pytest.raises(esign.EsignFailed) as substituted:
        adapter.complete(answer, txn="txn-3", document_sha256=DOCUMENT)
    assert substituted.value.code == "esign-wrong-document"


def test_a_changed_answer_or_one_from_another_esp_is_refused(esp):
    adapter = _adapter(esp)
    answer = _round_trip(adapter, "txn-4")
    tampered = answer.replace('status="1"', 'status="1" extra="x"')
    with pytest.raises(esign.EsignFailed) as changed:
        adapter.complete(tampered, txn="txn-4", document_sha256=DOCUMENT)
    assert changed.value.code == "esign-bad-response"
    _, other_cert = key_and_certificate("Some other ESP")
    with pytest.raises(esign.EsignFailed) as foreign:
        _adapter(esp, esign_esp_certificate=pem(other_cert)).complete(answer, txn="txn-4", document_sha256=DOCUMENT)
    assert foreign.value.code == "esign-bad-response"


def test_the_esp_s_refusals_come_through(esp):
    adapter = _adapter(esp)
    esp.refuse_next("ESP-945", "OTP validation failed")
    with pytest.raises(esign.EsignFailed) as refused:
        adapter.complete(_round_trip(adapter, "txn-5"), txn="txn-5", document_sha256=DOCUMENT)
    assert refused.value.code == "esign-refused" and refused.value.extra["esp_code"] == "ESP-945"
    assert "OTP validation failed" in refused.value.detail
    # A request signed with a key the ESP does not know is refused by the ESP.
    stranger_key, _ = key_and_certificate("Not the ASP")
    impostor = _adapter(esp, esign_asp_key=SecretStr(pem(stranger_key)))
    with pytest.raises(esign.EsignFailed) as unknown:
        impostor.complete(_round_trip(impostor, "txn-6"), txn="txn-6", document_sha256=DOCUMENT)
    assert unknown.value.extra["esp_code"] == "ESP-901"


def test_configuration_is_checked():
    assert esign.provider(Settings()) is None  # no eSign unless a deployment asks for it
    with pytest.raises(esign.EsignFailed) as missing:
        esign.provider(Settings(esign_provider="aadhaar"))
    assert missing.value.code == "esign-not-configured" and "CAREBASE_ESIGN_ESP_URL" in missing.value.detail
    with pytest.raises(ValueError):
        esign.provider(Settings(esign_provider="docusign"))


def test_a_pkcs7_signature_is_checked_against_the_signer_s_certificate():
    from tests.standins.esp import detached_cms

    digest = bytes.fromhex(DOCUMENT)
    key, cert = key_and_certificate("Meera Iyer")
    der = detached_cms(digest, key, cert)
    esign.verify_cms(der, digest, cert)  # good
    _, other = key_and_certificate("Meera Iyer")  # same name, another key
    with pytest.raises(esign.EsignFailed) as forged:
        esign.verify_cms(der, digest, other)
    assert forged.value.code == "esign-bad-signature"
    with pytest.raises(esign.EsignFailed) as garbage:
        esign.verify_cms(b"\x30\x03\x02\x01\x01", digest, cert)
    assert garbage.value.code == "esign-bad-response"


# -- the prescription flow --------------------------------------------------------------------


def _run(backend, settings, fn, *, tenant=None, account=None):
    return run_db(backend, fn, owner=False, tenant_id=tenant, account_id=account, settings=settings)


def test_a_prescriber_e_signs_an_approved_prescription_and_verification_shows_it(backend, owner, client, esp,
                                                                                   server):
    from carebase.platform.authz import Principal
    from carebase.prescribing import service
    from tests.conftest import bearer, demo_patient, login, tenant_id_of

    doctor = login(client, "doctor@demo.carebase.local")
    rx = client.post(f"/api/v1/patients/{demo_patient(owner)}/prescriptions", headers=bearer(doctor),
                     json={"items": [{"medicine": "paracetamol", "dose": 500, "unit": "mg",
                                      "times_per_day": 3}]}).json()
    assert client.post(f"/api/v1/prescriptions/{rx['id']}/approve", headers=bearer(doctor), json={}).status_code == 200
    # Where eSign is not enabled (the default), it says so.
    r = client.post(f"/api/v1/prescriptions/{rx['id']}/esign", headers=bearer(doctor))
    assert r.status_code == 409 and r.json()["code"] == "esign-not-enabled"

    tenant = tenant_id_of(owner, "demo")
    doctor_id = owner.execute("SELECT id FROM accounts WHERE email = 'doctor@demo.carebase.local'").fetchone()[0]
    settings = backend.settings.model_copy(update=dict(
        esign_provider="aadhaar", esign_esp_url=f"{esp.url}/esign/2.1/signdoc", esign_asp_id="CAREBASE01",
        esign_asp_key=SecretStr(pem(ASP_KEY)), esign_asp_certificate=pem(ASP_CERT),
        esign_esp_certificate=pem(esp.esp_certificate)))
    principal = Principal.of(doctor_id, tenant, ["doctor"])
    started = _run(backend, settings, lambda s: service.start_esign(s, principal, uuid.UUID(rx["id"])),
                   tenant=tenant, account=doctor_id)
    # Another doctor may not e-sign someone else's prescription.
    other = Principal.of(uuid.uuid4(), tenant, ["doctor"])
    with pytest.raises(DomainError) as not_theirs:
        _run(backend, settings, lambda s: service.start_esign(s, other, uuid.UUID(rx["id"])), tenant=tenant)
    assert not_theirs.value.code == "not-the-prescriber"

    answer = httpx.post(started.url, data=started.fields).text
    # A forged answer for this transaction (signed by some other "ESP") is refused; nothing stored.
    _, foreign_cert = key_and_certificate("Some other ESP")
    forged_settings = settings.model_copy(update={"esign_esp_certificate": pem(foreign_cert)})
    with pytest.raises(esign.EsignFailed):
        _run(backend, forged_settings, lambda s: service.complete_esign(s, answer))
    assert owner.execute("SELECT esign_signature FROM prescriptions WHERE id = %s", (rx["id"],)).fetchone()[0] is None
    # The real answer, without any session (it comes back through the browser, cross-site).
    assert str(_run(backend, settings, lambda s: service.complete_esign(s, answer))) == rx["id"]
    signer, at = owner.execute("SELECT esign_signer, esign_at FROM prescriptions WHERE id = %s",
                               (rx["id"],)).fetchone()
    assert signer == "Meera Iyer" and at is not None
    # Replayed, it finds nothing waiting.
    with pytest.raises(DomainError) as replayed:
        _run(backend, settings, lambda s: service.complete_esign(s, answer))
    assert replayed.value.code == "esign-unknown-transaction"
    v = httpx.get(f"{server.url}/api/v1/prescriptions/verify/{rx['id']}").json()
    assert v["status"] == "valid" and v["esigned_by"] == "Meera Iyer"
    assert client.get(f"/api/v1/prescriptions/{rx['id']}", headers=bearer(doctor)).json()["esigned_by"] == "Meera Iyer"
    from tests.encounters.test_export import pdf_text

    printed = pdf_text(client.get(f"/api/v1/prescriptions/{rx['id']}/pdf", headers=bearer(doctor)).content)
    assert "Aadhaar eSign: Meera Iyer" in printed
