"""Aadhaar eSign (India's CCA eSign API 2.1), the legally recognised signature Indian deployments
may need on a prescription beside Carebase's own Ed25519 signature.

The flow, as the API defines it: the ASP (this Carebase) builds an ``<Esign>`` request naming the
SHA-256 of the document (never the document itself), signs it with its own certificate
(XML-DSig, enveloped, RSA-SHA256), and the signer's browser posts it to the ESP's gateway
(``eSignRequest`` form field). The signer authenticates there with their Aadhaar OTP; the ESP
answers with an ``<EsignResp>`` (XML-signed by the ESP) that carries the signer's certificate and a
detached PKCS#7 (CMS) signature whose ``messageDigest`` is that hash.

``AadhaarEsign.complete`` trusts nothing it has not checked: the ESP's XML signature against the
ESP certificate in settings, the transaction id, the status, the CMS ``messageDigest`` against the
document's hash, and the CMS signature against the signer certificate.

Only the interface and the adapter live here; tests drive it against a stand-in ESP. Wiring it
into approval (send the doctor to the ESP, take the answer at a callback) is the next step.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from carebase.platform.errors import DomainError
from carebase.settings import Settings, public_base_url

IST = timezone(timedelta(hours=5, minutes=30))  # the API's timestamps are Indian Standard Time
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"


class EsignFailed(DomainError):
    status = 502
    code = "esign-failed"
    title = "The e-signature did not complete"


@dataclass(frozen=True)
class EsignRequest:
    """What the signer's browser posts to the ESP (an auto-submitting form)."""
    url: str
    fields: dict[str, str]
    txn: str


@dataclass(frozen=True)
class EsignResult:
    txn: str
    signature_pkcs7: str  # base64 DER CMS SignedData over the document's hash
    signer_name: str  # the certificate's common name (the name on the Aadhaar)
    signer_certificate_pem: str
    signed_at: str  # the ESP's timestamp


class EsignProvider(Protocol):
    def request(self, *, document_sha256: str, doc_info: str, txn: str) -> EsignRequest: ...

    def complete(self, response_xml: str, *, txn: str, document_sha256: str) -> EsignResult: ...


class AadhaarEsign:
    def __init__(self, settings: Settings):
        missing = [n for n in ("esign_esp_url", "esign_asp_id", "esign_asp_key", "esign_asp_certificate",
                               "esign_esp_certificate") if not getattr(settings, n)]
        if missing:
            names = ", ".join("CAREBASE_" + m.upper() for m in missing)
            raise EsignFailed(f"Aadhaar eSign is not configured: set {names}.", code="esign-not-configured")
        self.url = settings.esign_esp_url
        self.asp_id = settings.esign_asp_id
        self.asp_key = settings.esign_asp_key.get_secret_value()
        self.asp_certificate = settings.esign_asp_certificate
        self.esp_certificate = settings.esign_esp_certificate
        self.response_url = f"{public_base_url(settings)}/api/v1/esign/response"

    def request(self, *, document_sha256: str, doc_info: str, txn: str) -> EsignRequest:
        from signxml import XMLSigner

        root = etree.Element("Esign", ver="2.1", sc="Y", ts=datetime.now(IST).strftime("%Y-%m-%dT%H:%M:%S"),
                             txn=txn, ekycId="", ekycIdType="A", aspId=self.asp_id, AuthMode="1",
                             responseSigType="pkcs7", preVerified="n", organizationFlag="n",
                             responseUrl=self.response_url)
        docs = etree.SubElement(root, "Docs")
        etree.SubElement(docs, "InputHash", id="1", hashAlgorithm="SHA256", docInfo=doc_info[:50]).text = \
            document_sha256
        signed = XMLSigner(signature_algorithm="rsa-sha256", digest_algorithm="sha256", c14n_algorithm=C14N).sign(
            root, key=self.asp_key, cert=self.asp_certificate)
        xml = etree.tostring(signed, xml_declaration=True, encoding="UTF-8").decode()
        return EsignRequest(self.url, {"eSignRequest": xml, "aspTxnID": txn, "Content-Type": "application/xml"},
                            txn)

    def complete(self, response_xml: str, *, txn: str, document_sha256: str) -> EsignResult:
        from signxml import InvalidInput, XMLVerifier

        try:
            resp = XMLVerifier().verify(response_xml.encode(), x509_cert=self.esp_certificate).signed_xml
        except (InvalidInput, InvalidSignature, etree.XMLSyntaxError, ValueError) as exc:
            raise EsignFailed("The eSign answer is not signed by the configured ESP.", code="esign-bad-response",
                              reason=type(exc).__name__) from None
        if resp.tag != "EsignResp" or resp.get("txn") != txn:
            raise EsignFailed("The eSign answer belongs to another transaction.", code="esign-bad-response")
        if resp.get("status") != "1":
            raise EsignFailed(f"The signer's ESP refused: {resp.get('errMsg') or 'no reason given'}.",
                              code="esign-refused", esp_code=resp.get("errCode"))
        try:
            cert_der = base64.b64decode(resp.findtext("UserX509Certificate") or "")
            certificate = x509.load_der_x509_certificate(cert_der)
            signature = (resp.find("Signatures/DocSignature[@id='1']").text or "").strip()
        except (ValueError, AttributeError):
            raise EsignFailed("The eSign answer has no signer certificate or signature.",
                              code="esign-bad-response") from None
        try:
            der = base64.b64decode(signature, validate=True)
        except ValueError:
            raise EsignFailed("The eSign answer's signature is not base64.", code="esign-bad-response") from None
        verify_cms(der, bytes.fromhex(document_sha256), certificate)
        names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return EsignResult(txn, signature, str(names[0].value) if names else "",
                           certificate.public_bytes(serialization.Encoding.PEM).decode(), resp.get("ts") or "")


def verify_cms(der: bytes, digest: bytes, certificate: x509.Certificate) -> None:
    """A detached CMS SignedData: its ``messageDigest`` is ``digest`` and its signature over the
    signed attributes verifies with ``certificate``'s key (RSA PKCS#1 v1.5, SHA-256)."""
    from asn1crypto import cms

    try:
        signed_data = cms.ContentInfo.load(der)["content"]
        signer = signed_data["signer_infos"][0]
        attrs = signer["signed_attrs"]
        message_digest = next(a["values"][0].native for a in attrs if a["type"].native == "message_digest")
        # The signature covers the attributes DER-encoded as a SET OF, not with their [0] tag.
        signed_bytes = b"\x31" + attrs.dump()[1:]
        signature = signer["signature"].native
    except (ValueError, KeyError, IndexError, StopIteration, TypeError):
        raise EsignFailed("The signature is not a readable PKCS#7 structure.", code="esign-bad-response") from None
    if message_digest != digest:
        raise EsignFailed("The ESP signed a different document.", code="esign-wrong-document")
    try:
        certificate.public_key().verify(signature, signed_bytes, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, TypeError, AttributeError):
        raise EsignFailed("The PKCS#7 signature does not verify with the signer's certificate.",
                          code="esign-bad-signature") from None


def provider(settings: Settings) -> EsignProvider | None:
    """The configured eSign provider; None when the deployment needs none (the default)."""
    if settings.esign_provider == "aadhaar":
        return AadhaarEsign(settings)
    if settings.esign_provider == "none":
        return None
    raise ValueError(f"CAREBASE_ESIGN_PROVIDER={settings.esign_provider!r}: not one of ['none', 'aadhaar']")
