"""Signatures of fit files: authenticity for those who need it, beyond the content seal.

The seal (:func:`hierarchy.results.fitfile.content_hash`) catches accidental and naive edits, but
anyone with this code can recompute it. A signature cannot be remade without the private key: the
secure environment keeps the key (made once with :func:`generate_key`) and signs each fit that
leaves (:func:`sign_fit`, a detached ``FIT.nc.sig`` beside the fit); a reader outside verifies it with
the public key (:func:`verify_fit`). Ed25519 from the maintained ``cryptography`` package.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hierarchy.errors import FitFileError, HierarchyError

SUFFIX = ".sig"


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - a dependency, but say so plainly if it is missing
        raise HierarchyError("signing needs the 'cryptography' package: pip install cryptography") from None
    return serialization, ed25519


def generate_key(private_path: str | os.PathLike, *, replace: bool = False) -> Path:
    """Write a new Ed25519 private key (PEM, mode 600, ``NAME.key``) and its public key (``NAME.pub``).

    Refuses to replace an existing key file unless ``replace`` (fits signed with the old key then no longer
    verify with the new public key). Returns the public key's path.
    """
    from hierarchy.paths import atomic_path

    serialization, ed25519 = _crypto()
    private_path = Path(private_path)
    if private_path.suffix != ".key":
        raise HierarchyError(f"{private_path}: name the private key NAME.key (its public key is NAME.pub)")
    public_path = private_path.with_suffix(".pub")
    for p in (private_path, public_path):
        if p.exists() and not replace:
            raise HierarchyError(f"{p} exists: a key is replaced only with --force (fits signed with it then "
                                 "no longer verify); choose another path")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    with atomic_path(private_path) as tmp:  # created readable by its owner only, before any byte is written
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    with atomic_path(public_path) as tmp:
        Path(tmp).write_bytes(pub)
    return public_path


def signature_path(fit_path: str | os.PathLike) -> Path:
    """Where the signature of a fit file goes: ``FIT.nc`` -> ``FIT.nc.sig``."""
    fit_path = Path(fit_path)
    return fit_path.with_name(fit_path.name + SUFFIX)


def _digest(fit_path: Path) -> bytes:
    h = hashlib.sha256()
    with open(fit_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return b"hierarchy-fit-v1:" + h.digest()


def sign_fit(fit_path: str | os.PathLike, private_key: str | os.PathLike) -> Path:
    """Sign the bytes of a fit file; the signature goes to ``FIT.nc.sig`` beside it (returned)."""
    from hierarchy.paths import atomic_path

    serialization, ed25519 = _crypto()
    fit_path = Path(fit_path)
    try:
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise HierarchyError(f"{private_key}: not a readable private key ({err.__class__.__name__})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise HierarchyError(f"{private_key}: not an Ed25519 key (make one with hierarchy keygen)")
    out = signature_path(fit_path)
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(key.sign(_digest(fit_path)).hex().encode() + b"\n")
    return out


def verify_fit(fit_path: str | os.PathLike, public_key: str | os.PathLike) -> None:
    """Raise :class:`~hierarchy.errors.FitFileError` unless ``FIT.nc.sig`` is a valid signature of the fit."""
    from cryptography.exceptions import InvalidSignature

    serialization, ed25519 = _crypto()
    fit_path = Path(fit_path)
    sig_path = signature_path(fit_path)
    if not sig_path.exists():
        raise FitFileError(f"{fit_path}: no signature ({sig_path.name}); ask its maker to sign it")
    try:
        key = serialization.load_pem_public_key(Path(public_key).read_bytes())
        sig = bytes.fromhex(sig_path.read_text().strip())
    except (OSError, ValueError, TypeError) as err:
        raise FitFileError(f"cannot read the public key or the signature ({err.__class__.__name__}: "
                           f"{err})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise FitFileError(f"{public_key}: not an Ed25519 public key")
    try:
        key.verify(sig, _digest(fit_path))
    except InvalidSignature:
        raise FitFileError(f"{fit_path}: its signature does not verify with {public_key}: the file was "
                           "changed after signing, or signed with another key. Do not use it.") from None
