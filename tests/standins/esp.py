"""An eSign Service Provider (India's eSign API 2.1), as Carebase's Aadhaar eSign adapter assumes it.

``POST /esign/2.1/signdoc`` takes the form the signer's browser would post (``eSignRequest``,
``aspTxnID``), checks the request's XML signature against the ASP certificate it was given, and —
as if the signer had passed the Aadhaar OTP — answers with an ``<EsignResp>``: the signer's
certificate (issued by this stand-in's CA), a detached CMS signature whose ``messageDigest`` is the
request's ``InputHash``, all XML-signed with the ESP's own key. A real ESP posts that answer back
through the browser to ``responseUrl``; here it is the HTTP response body.

``refuse_next`` makes the next answer a refusal (``status="0"``, an ESP error code), as when the
OTP is wrong. A request not signed by the known ASP is refused with ``ESP-901``.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree
from signxml import XMLSigner, XMLVerifier
from starlette.requests import Request
from starlette.responses import Response

from tests.standins.base import Handler, Received, StandIn


def key_and_certificate(name: str, issuer: tuple | None = None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An RSA key and a certificate for it, self-signed or issued by (issuer key, issuer cert)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    signer_key, issuer_name = (issuer[0], issuer[1].subject) if issuer else (key, subject)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
            .sign(signer_key, hashes.SHA256()))
    return key, cert


def pem(obj) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def detached_cms(digest: bytes, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> bytes:
    """CMS SignedData over a digest the signer never saw the document of (what an ESP returns)."""
    asn_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        cms.CMSAttribute({"type": "signing_time", "values": [core.UTCTime(datetime.now(UTC))]}),
        cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
    ])
    signature = key.sign(attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
    signer = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": asn_cert.issuer, "serial_number": asn_cert.serial_number})}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signed_attrs": attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}),
        "signature": signature,
    })
    signed_data = cms.SignedData({
        "version": "v1", "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
        "encap_content_info": {"content_type": "data"}, "certificates": [asn_cert], "signer_infos": [signer]})
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


class EspStandIn(StandIn):
    def __init__(self, asp_certificate: x509.Certificate, signer_name: str = "Meera Iyer") -> None:
        self.asp_certificate = pem(asp_certificate)
        self.esp_key, self.esp_certificate = key_and_certificate("Stand-in ESP")
        self.ca = key_and_certificate("Stand-in eSign CA")
        self.signer_name = signer_name
        self.refusal: tuple[str, str] | None = None
        self.sign_instead: bytes | None = None  # sign this digest, not the requested one
        super().__init__()

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/esign/2.1/signdoc", self.signdoc)]

    def refuse_next(self, code: str = "ESP-945", message: str = "OTP validation failed") -> None:
        self.refusal = (code, message)

    async def signdoc(self, request: Request, received: Received) -> Response:
        form = received.form()
        try:
            esign = XMLVerifier().verify(form["eSignRequest"].encode(), x509_cert=self.asp_certificate).signed_xml
        except Exception:
            return self._answer(form.get("aspTxnID", ""), refused=("ESP-901", "Invalid ASP signature"))
        txn = esign.get("txn")
        if self.refusal:
            refused, self.refusal = self.refusal, None
            return self._answer(txn, refused=refused)
        digest = bytes.fromhex(esign.findtext("Docs/InputHash"))
        user_key, user_cert = key_and_certificate(self.signer_name, self.ca)
        signature = detached_cms(self.sign_instead or digest, user_key, user_cert)
        return self._answer(txn, certificate=user_cert, signature=signature)

    def _answer(self, txn: str, *, refused: tuple[str, str] | None = None, certificate: x509.Certificate | None = None,
                signature: bytes | None = None) -> Response:
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        resp = etree.Element("EsignResp", ver="2.1", status="0" if refused else "1", ts=ts, txn=txn,
                             resCode=hashlib.sha256(txn.encode()).hexdigest()[:16],
                             errCode=refused[0] if refused else "NA", errMsg=refused[1] if refused else "NA")
        if not refused:
            etree.SubElement(resp, "UserX509Certificate").text = base64.b64encode(
                certificate.public_bytes(serialization.Encoding.DER)).decode()
            sigs = etree.SubElement(resp, "Signatures")
            etree.SubElement(sigs, "DocSignature", id="1", sigHashAlgorithm="SHA256", error="").text = \
                base64.b64encode(signature).decode()
        signed = XMLSigner(signature_algorithm="rsa-sha256", digest_algorithm="sha256",
                           c14n_algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315").sign(
            resp, key=pem(self.esp_key), cert=pem(self.esp_certificate))
        return Response(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"), media_type="application/xml")
