"""COS request signatures (q-sign-algorithm=sha1), spec/protocol.md section 2.

`verify` is a pure function of the request's parts, the key lookup and the clock, so it is
tested against the spec's worked examples byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .. import errors

SIGN_FIELDS = (
    "q-sign-algorithm",
    "q-ak",
    "q-sign-time",
    "q-key-time",
    "q-header-list",
    "q-url-param-list",
    "q-signature",
)
# Query parameters that carry a signature and are never themselves signed.
AUTH_PARAMS = frozenset((*SIGN_FIELDS, "sign"))


@dataclass(frozen=True)
class SignedRequest:
    method: str
    path: str  # percent-decoded, starting with "/"
    params: Sequence[tuple[str, str]]  # percent-decoded names and values, in request order
    headers: Mapping[str, str]  # lower-case names


def _enc(s: str) -> str:
    return quote(s, safe="-_.~")


def _hex_hmac(key: str, msg: str) -> str:
    return hmac.new(key.encode(), msg.encode(), hashlib.sha1).hexdigest()


def signature(secret_key: str, key_time: str, sign_time: str, http_string: str) -> str:
    sign_key = _hex_hmac(secret_key, key_time)
    string_to_sign = f"sha1\n{sign_time}\n{hashlib.sha1(http_string.encode()).hexdigest()}\n"
    return _hex_hmac(sign_key, string_to_sign)


def http_string(
    method: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    param_list: Sequence[str],
    header_list: Sequence[str],
) -> str:
    def join(names: Sequence[str], values: Mapping[str, str]) -> str:
        # Names arrive encoded and lower-cased (as listed in the signature); values raw.
        return "&".join(f"{n}={_enc(values[n])}" for n in sorted(names))

    return f"{method.lower()}\n{path}\n{join(param_list, params)}\n{join(header_list, headers)}\n"


def parse_authorization(value: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in value.split("&"):
        name, sep, val = item.partition("=")
        if not sep:
            continue
        fields[name.strip().lower()] = val.strip()
    return fields


def extract(req: SignedRequest) -> dict[str, str] | None:
    """The signature fields of a request: Authorization header, q-* query parameters or Go's `sign=`."""
    auth = req.headers.get("authorization")
    if auth:
        return parse_authorization(auth)
    params = {k.lower(): v for k, v in req.params}
    if "q-signature" in params:
        return {k: params.get(k, "") for k in SIGN_FIELDS}
    if params.get("sign"):
        return parse_authorization(unquote(params["sign"]))
    return None


def _window(text: str) -> tuple[int, int]:
    start, sep, end = text.partition(";")
    if not sep:
        raise ValueError(text)
    return int(start), int(end)


def verify(
    req: SignedRequest,
    key_for: Callable[[str], str | None],
    now: float,
    *,
    skew: int = 900,
) -> str:
    """Check the request's signature; return the SecretId that signed it."""
    fields = extract(req)
    if fields is None:
        raise errors.AccessDenied("Request has no signature: anonymous access is not allowed.")
    if fields.get("q-sign-algorithm", "").lower() != "sha1":
        raise errors.AccessDenied("q-sign-algorithm must be sha1.")
    missing = [f for f in SIGN_FIELDS if f not in fields and f != "q-sign-algorithm"]
    if missing:
        raise errors.AccessDenied(f"Authorization lacks {', '.join(missing)}.")
    sign_time, key_time = fields["q-sign-time"], fields["q-key-time"]
    try:
        start, end = _window(sign_time)
        _window(key_time)
    except ValueError:
        raise errors.AccessDenied(
            "q-sign-time and q-key-time must be '<start>;<end>' in Unix seconds."
        ) from None
    secret_key = key_for(fields["q-ak"])
    if secret_key is None:
        raise errors.InvalidAccessKeyId()
    if now > end:
        raise errors.AccessDenied("Request has expired")
    if start > now + skew:
        raise errors.RequestTimeTooSkewed()

    header_list = [h for h in fields["q-header-list"].split(";") if h]
    param_list = [p for p in fields["q-url-param-list"].split(";") if p]
    # Signed names are lower-case and URL-encoded; compare them that way.
    params: dict[str, str] = {}
    for name, value in req.params:
        if name.lower() in AUTH_PARAMS:
            continue
        params.setdefault(_enc(name).lower(), value)
    signed_params: dict[str, str] = {}
    for p in param_list:
        if p not in params:
            raise errors.SignatureDoesNotMatch(f"Signed parameter {p!r} is not in the request.")
        signed_params[p] = params[p]
    headers: dict[str, str] = {}
    for h in header_list:
        name = unquote(h)
        if name not in req.headers:
            raise errors.SignatureDoesNotMatch(f"Signed header {name!r} is not in the request.")
        headers[h] = req.headers[name]

    given = fields["q-signature"].lower()
    hosts = [headers.get("host")]
    if hosts[0] is not None and ":" in hosts[0] and not hosts[0].endswith("]"):
        # Python signs the host without its port when it did not set Host itself.
        hosts.append(hosts[0].rsplit(":", 1)[0])
    for host in hosts:
        if host is not None:
            headers["host"] = host
        text = http_string(req.method, req.path, signed_params, headers, param_list, header_list)
        for st in dict.fromkeys((sign_time, key_time)):
            if hmac.compare_digest(signature(secret_key, key_time, st, text), given):
                return fields["q-ak"]
    raise errors.SignatureDoesNotMatch()
