"""Content Credentials (C2PA manifests) through the Content Authenticity Initiative's c2pa-python: what a
file claims about how it was made, signed, and read back with its validation state."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from .. import __version__
from ..errors import FacesynthError
from .keys import SigningKey, signing_key, trust_anchors

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATED = "trainedAlgorithmicMedia"
ANIMATED_PHOTO = "compositeWithTrainedAlgorithmicMedia"
ASSERTION = "org.facesynth.generation"
# No thumbnail (it made a 12 kB face 290 kB); and nothing fetched from the network, ever.
_BUILD = {"builder": {"thumbnail": {"enabled": False}}}
_OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}


def _c2pa():
    try:
        import c2pa
    except ImportError:
        raise FacesynthError("Content Credentials need c2pa-python: pip install c2pa-python "
                             "(or pass --no-mark)") from None
    return c2pa


def mime_of(head: bytes) -> str | None:
    """The media type from a file's first bytes, for the formats facesynth writes and reads."""
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    return None


def manifest_definition(title: str, source_type: str, claims: dict) -> dict:
    action = {"action": "c2pa.created", "digitalSourceType": IPTC + source_type,
              "softwareAgent": {"name": "facesynth", "version": __version__}}
    return {"claim_generator_info": [{"name": "facesynth", "version": __version__}], "title": title,
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [action]}},
                           {"label": ASSERTION, "data": claims}]}


_signers: dict[SigningKey, object] = {}


def _signer(key: SigningKey):
    c2pa = _c2pa()
    if key not in _signers:
        info = c2pa.C2paSignerInfo(getattr(c2pa.C2paSigningAlg, key.algorithm), key.chain_pem, key.key_pem, None)
        try:
            _signers[key] = c2pa.Signer.from_info(info)
        except c2pa.C2paError as e:
            raise FacesynthError(f"the Content Credentials signing key was refused: {e}") from None
    return _signers[key]


def sign(source: BinaryIO, dest: BinaryIO, mime: str, definition: dict) -> None:
    """Copies ``source`` to ``dest`` with a signed manifest embedded."""
    c2pa = _c2pa()
    try:
        with c2pa.Builder(definition, context=c2pa.Context.from_dict(_BUILD)) as builder:
            builder.sign(_signer(signing_key()), mime, source, dest)
    except c2pa.C2paError as e:
        raise FacesynthError(f"signing Content Credentials into {definition.get('title')} failed: {e}") from None


def sign_bytes(data: bytes, mime: str, definition: dict) -> bytes:
    out = io.BytesIO()
    sign(io.BytesIO(data), out, mime, definition)
    return out.getvalue()


def read(path: str | Path, mime: str) -> dict:
    """{present, state (Valid / Trusted / Invalid), valid, trusted, signer, claims, problems} of a file."""
    c2pa = _c2pa()
    settings = dict(_OFFLINE)
    anchors = trust_anchors()
    if anchors:
        settings = {"verify": {**_OFFLINE["verify"], "verify_trust": True},
                    "trust": {"trust_anchors": anchors.decode()}}
    try:
        with open(path, "rb") as f:
            reader = c2pa.Reader.try_create(mime, f, None, c2pa.Context.from_dict(settings))
            if reader is None:
                return {"present": False}
            with reader:
                state = reader.get_validation_state() or "Invalid"
                results = reader.get_validation_results() or {}
                active = reader.get_active_manifest() or {}
    except c2pa.C2paError as e:
        return {"present": True, "state": "Unreadable", "valid": False, "trusted": False,
                "problems": [str(e).splitlines()[0] if str(e) else type(e).__name__]}
    failures = (results.get("activeManifest") or {}).get("failure") or []
    # Without a trust list every self-made signer is "untrusted": that says nothing of the file's integrity.
    problems = [f["code"] for f in failures if f.get("code") != "signingCredential.untrusted"]
    return {"present": True, "state": state, "valid": not problems,
            "trusted": state == "Trusted", "signer": (active.get("signature_info") or {}).get("common_name"),
            "issuer": (active.get("signature_info") or {}).get("issuer"), "claims": _claims(active),
            "problems": problems}


def _claims(active: dict) -> dict:
    out = {"generator": ", ".join(f"{g.get('name')} {g.get('version', '')}".strip()
                                  for g in active.get("claim_generator_info") or [])}
    for a in active.get("assertions") or []:
        if a.get("label", "").startswith("c2pa.actions"):
            for act in (a.get("data") or {}).get("actions") or []:
                if act.get("digitalSourceType"):
                    out["digital_source_type"] = act["digitalSourceType"].rsplit("/", 1)[-1]
        elif a.get("label") == ASSERTION:
            out.update(a.get("data") or {})
    return out
