"""Hide secrets wherever a URL or storage options are shown (messages, reprs, files).

* :func:`redact_url` masks the password of a URL's userinfo
  (``http://user:pass@host/x`` -> ``http://user:***@host/x``) and the values of
  signing query parameters (``sig``, ``X-Amz-Signature``, ``token`` ...) of
  pre-signed or SAS URLs.
* :func:`redact_options` returns a copy of a mapping (nested dicts and lists
  too) with the values of secret-looking keys (``key``, ``secret``,
  ``token``, ``password``, ``sas_token``, ``account_key``, ``credential(s)``,
  ``session_token``, ``aws_secret_access_key``, ``connection_string`` ...)
  replaced by ``***``, and every URL string in it passed through
  :func:`redact_url`.  Use it for any parameter dict that gets printed.
* :func:`redact_text` applies the URL rules to free text (an error message
  that quotes a URL, a foreign exception's text).

No function here raises: a value it cannot parse is returned as it came.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

MASK = "***"

# exact option names (lower-case, '-' read as '_') whose values are secrets
_SECRET_NAMES = frozenset({
    "key", "secret", "token", "password", "passwd", "pwd", "pass", "sas_token", "sas",
    "account_key", "credential", "credentials", "session_token", "security_token",
    "aws_secret_access_key", "aws_session_token", "aws_security_token", "secret_key",
    "access_key", "private_key", "api_key", "apikey", "client_secret", "connection_string",
    "authorization", "auth", "sig", "signature", "refresh_token", "access_token", "id_token",
    "bearer", "cookie", "x_amz_signature", "x_amz_credential", "x_amz_security_token",
    "sse_customer_key", "sse_kms_key_id", "kerberos_ticket", "ticket", "delegation_token",
})
# ... or that end with one of these (e.g. "my_secret", "storage_account_key")
_SECRET_SUFFIXES = ("secret", "password", "passwd", "token", "credential", "credentials",
                    "_key", "signature", "sas")
# option names that end like a secret but are not one
_NOT_SECRET = frozenset({"sort_key", "cache_key", "partition_key", "label_key", "sse_key_type"})

# query parameters of pre-signed / SAS / token URLs whose values are secrets
_SECRET_QUERY = frozenset({
    "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential", "token", "access_token", "sas", "sas_token",
    "password", "secret", "key", "api_key", "apikey", "awsaccesskeyid", "x-ms-signature",
    "skoid", "sktid", "delegation", "code",
})

# scheme://user:password@  (also inside longer text, e.g. "URL('http://u:p@h/')")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/@:'\"<>]*)"
                       r":(?P<pw>[^\s/@'\"<>]*)@")
# ?name=value or &name=value in URLs
_QUERY = re.compile(r"(?P<sep>[?&;])(?P<name>[A-Za-z0-9_.\-]+)=(?P<val>[^&#\s'\"<>)]*)")
# 'secret': 'value' / "token": "value" / password=value in reprs and messages
_KV = re.compile(r"(?P<q>['\"]?)(?P<name>[A-Za-z][A-Za-z0-9_\-]*)(?P=q)(?P<sep>\s*[:=]\s*)"
                 r"(?P<vq>['\"])(?P<val>.*?)(?P=vq)")
# Azure connection strings: AccountKey=...; SharedAccessSignature=...;
_AZURE = re.compile(r"(?i)(?P<name>AccountKey|SharedAccessSignature|SharedAccessKey|Password)"
                    r"=(?P<val>[^;'\"\s]+)")


def is_secret_name(name: Any) -> bool:
    """True when an option or query-parameter name holds a secret value."""
    if not isinstance(name, str):
        return False
    n = name.strip().lower().replace("-", "_")
    if n in _NOT_SECRET:
        return False
    return n in _SECRET_NAMES or n.endswith(_SECRET_SUFFIXES)


def _mask_userinfo(m: "re.Match[str]") -> str:
    return f"{m.group('scheme')}{m.group('user')}:{MASK}@"


def _mask_query(m: "re.Match[str]") -> str:
    name = m.group("name")
    if name.lower() in _SECRET_QUERY or is_secret_name(name):
        return f"{m.group('sep')}{name}={MASK}"
    return m.group(0)


def _mask_kv(m: "re.Match[str]") -> str:
    if not is_secret_name(m.group("name")):
        return m.group(0)
    q, vq = m.group("q"), m.group("vq")
    return f"{q}{m.group('name')}{q}{m.group('sep')}{vq}{MASK}{vq}"


def redact_url(url: Any) -> Any:
    """``url`` with its userinfo password and secret query values masked.

    Non-strings (e.g. ``None``, a path object) come back unchanged; a plain
    path without ``://`` comes back unchanged too.
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    out = _USERINFO.sub(_mask_userinfo, url)
    if "?" in out or ";" in out:
        out = _QUERY.sub(_mask_query, out)
    return out


def redact_text(text: Any) -> Any:
    """Free text with every URL's secrets and every ``'secret': '...'`` value masked."""
    if not isinstance(text, str) or not text:
        return text
    out = text
    if "://" in out:
        out = _USERINFO.sub(_mask_userinfo, out)
        if "?" in out:
            out = _QUERY.sub(_mask_query, out)
    if "'" in out or '"' in out:
        out = _KV.sub(_mask_kv, out)
    if "=" in out:
        out = _AZURE.sub(lambda m: f"{m.group('name')}={MASK}", out)
    return out


def redact_options(opts: Any) -> Any:
    """A copy of ``opts`` safe to print: secret keys masked, URLs redacted, nested too.

    Works on any parameter mapping (storage options, an iterator's params),
    lists/tuples/sets of them, and plain values (a string is treated as a
    URL).  The input is never modified.
    """
    return _redact_value(opts, depth=0)


def _redact_value(value: Any, depth: int) -> Any:
    if depth > 20:  # a self-referencing structure: stop rather than recurse forever
        return MASK
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if is_secret_name(k) and v not in (None, "", False):
                out[k] = MASK if not isinstance(v, Mapping) else _mask_all(v)
            else:
                out[k] = _redact_value(v, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        items = [_redact_value(v, depth + 1) for v in value]
        return type(value)(items) if type(value) in (list, tuple) else items
    if isinstance(value, (set, frozenset)):
        return type(value)(_redact_value(v, depth + 1) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def _mask_all(value: Mapping) -> dict:
    """A secret given as a dict (e.g. ``credentials={...}``): keep the keys, hide the values."""
    return {k: MASK for k in value}
