"""What counts as a secret, and how each place that can carry one is redacted (pure, no I/O, never raises).

The rule of the project: no raw secret (credentials in headers, bodies, query strings or command lines;
payment signatures; signed transactions) is ever stored where users query. A secret value is replaced by
a tag, `[redacted sha256:<16 hex>]`, so equal secrets still correlate and nothing can be read back.

**One definition of a secret name** (`is_secret_name`) serves every place where a name labels a value:
header names, query parameters, form fields, JSON keys, command-line flags and `NAME=value` pairs. The
name is lowercased, split into words at separators and camelCase humps, and also read with the separators
removed ("compact": `X-Api-Key` → `xapikey`). It is secret when
- the compact form contains a strong part: secret, password, passwd, passphrase, cookie, credential,
  signature, authoriz(ation), oauth, bearer, apikey, accesskey, privatekey, mnemonic,
  seedphrase, macaroon (L402's `Macaroon` header carries the whole credential); or `token` not followed by s/izer/count/usage/limit/type (so `max_tokens`, `tokenizer`
  and `token_type` stay readable); or it ends in `key`;
- or one of its words is a weak word that means a secret only on its own: key, tok, auth, authn, authz,
  session, sig, pass, private (so `author`, `keyboard`, `design` and `passage` stay readable);
- or it is `x-payment` (an x402 payment: a signed authorization that says nothing about it in its name)
  or `sign-in-with-x` (x402's sign-in: a signature that grants access until it expires);
- unless it is public: idempotency-key, x-request-id, payment-response, x-payment-response,
  payment-required, x-upto-session, content-type, keep-alive, anything starting `x-tee-` (the TEE's own
  proof), and public keys (`public_key`, `pubkey`).

**Where values are found**
- headers: the value of a secret-named header (exchange.safe_headers);
- `name=value` pairs: query strings, form bodies (`application/x-www-form-urlencoded`), `NAME=value`
  arguments: the value of a secret name (`redact_pairs`);
- multipart form bodies: the content of a part with a secret name (`redact_multipart`);
- JSON: the value of a secret key, at any depth, and inside string values that are themselves JSON
  documents (parsed, redacted, stored back as a string; bounded in size and nesting) (`redact_json`);
  JSON that does not parse, and JSON quoted inside text (`echo: {"token": …}`), is redacted by a scan
  for `"key": value` pairs (`redact_json_text`);
- command lines (`redact_argv`): all of the above per argument, plus header flags (`-H`, `--header`),
  credential flags (`-u user:pass`, `--user`, `--proxy-user`, curl's `-b name=value`), any flag whose
  name is secret (`--api-key x`, `--token=x`), credentials in URLs (`https://user:pass@host`), and values
  that look like known key formats wherever they appear (`KEY_FORMATS`, `Bearer <token>`).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus

import orjson

MAX_DEPTH = 64  # JSON containers deeper than this become "[too deep]"
MAX_EMBEDDED = 1 << 20  # longest string value parsed as an embedded JSON document
MAX_EMBEDDED_LEVELS = 4  # JSON in a string in a string …: levels parsed

SECRET_PARTS = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "cookie",
    "credential",
    "signature",
    "authoriz",
    "oauth",
    "bearer",
    "apikey",
    "accesskey",
    "privatekey",
    "mnemonic",
    "seedphrase",
    "macaroon",
)
SECRET_WORDS = frozenset({"key", "tok", "auth", "authn", "authz", "session", "sig", "pass", "private"})
SECRET_NAMES = frozenset({"xpayment", "signinwithx"})
PUBLIC_NAMES = frozenset(
    {
        "idempotencykey",
        "xrequestid",
        "paymentresponse",
        "xpaymentresponse",
        "paymentrequired",
        "xuptosession",
        "contenttype",
        "keepalive",
    }
)
PUBLIC_PREFIXES = ("xtee",)
PUBLIC_PARTS = ("publickey", "pubkey")
_TOKEN = re.compile(r"token(?!s|izer|count|usage|limit|type)")
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def sha256_hex(data: bytes | str) -> str:
    """SHA-256 of bytes, or of text as it was sent (bytes_of)."""
    return hashlib.sha256(bytes_of(data) if isinstance(data, str) else data).hexdigest()


def bytes_of(text: str) -> bytes:
    """The bytes a text came from: escaped bytes (surrogateescape) as they were; never raises."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "surrogatepass")


def redacted(value: str | bytes) -> str:
    """The tag that stands for a secret text: its SHA-256, cut to 16 hex digits."""
    return f"[redacted sha256:{sha256_hex(value)[:16]}]"


@lru_cache(maxsize=8192)
def is_secret_name(name: str) -> bool:
    """True when a header, parameter, field, key or flag of this name holds a secret (module docstring)."""
    words = [w for w in _NOT_ALNUM.split(_HUMP.sub(" ", str(name)).lower()) if w]
    compact = "".join(words)
    if compact in PUBLIC_NAMES or compact.startswith(PUBLIC_PREFIXES) or any(p in compact for p in PUBLIC_PARTS):
        return False
    return (
        compact in SECRET_NAMES
        or any(p in compact for p in SECRET_PARTS)
        or bool(_TOKEN.search(compact))
        or compact.endswith("key")
        or not SECRET_WORDS.isdisjoint(words)
    )


# ---- name=value pairs: query strings, form bodies, NAME=value ------------------------------------
def redact_pairs(text: str) -> str:
    """`a=1&api_key=x` → `a=1&api_key=[redacted …]`: values of secret names (percent-decoded) become tags."""
    parts = []
    for item in text.split("&"):
        name, eq, value = item.partition("=")
        if eq and is_secret_name(unquote_plus(name)):
            value = redacted(value)
        parts.append(f"{name}{eq}{value}")
    return "&".join(parts)


def secret_pair_names(text: str) -> list[str]:
    """Names (never values) of the secret parameters of a query string or form body."""
    return sorted(
        {
            name
            for name, eq, _ in (item.partition("=") for item in text.split("&"))
            if eq and is_secret_name(unquote_plus(name))
        }
    )


# ---- multipart/form-data -------------------------------------------------------------------------
_PART_NAME = re.compile(rb'(?i)content-disposition:[^\r\n]*?\bname="([^"]*)"')


def redact_multipart(body: bytes, content_type: str | None) -> bytes:
    """A multipart form body with the content of each secret-named part replaced by its tag."""
    m = re.search(r'(?i)boundary="?([^";]+)"?', content_type or "")
    if not m:
        return body
    delimiter = b"--" + m.group(1).strip().encode("latin-1", "replace")
    pieces = body.split(delimiter)
    for i, piece in enumerate(pieces[1:], 1):
        head, sep, content = piece.partition(b"\r\n\r\n")
        name = _PART_NAME.search(head)
        if sep and name and is_secret_name(name.group(1).decode("utf-8", "replace")):
            end = b"\r\n" if content.endswith(b"\r\n") else b""
            pieces[i] = head + sep + redacted(content[: len(content) - len(end)]).encode() + end
    return delimiter.join(pieces)


# ---- JSON --------------------------------------------------------------------------------------------
def _fingerprint(value: object) -> str:
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except Exception:
        try:
            encoded = repr(value).encode("utf-8", "surrogatepass")
        except Exception:
            encoded = type(value).__name__.encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def redaction_tag(value: object) -> str:
    """`[redacted sha256:<16 hex>]` of a JSON value serialized as JSON."""
    return f"[redacted sha256:{_fingerprint(value)}]"


def loads(text: str | bytes) -> object | None:
    """A JSON document, or None. orjson first; the standard library for what orjson refuses (integers
    wider than 64 bits, NaN), so such a document is still redacted key by key."""
    try:
        return orjson.loads(text)
    except (ValueError, TypeError):
        pass
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return None


def dumps(doc: object) -> str:
    try:
        return orjson.dumps(doc).decode()
    except TypeError:  # an integer orjson cannot write
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _in_string(text: str, depth: int, level: int) -> str:
    """A string value: one that is itself a JSON object or array is parsed, redacted and written back as a
    string (unchanged when it holds no secret); other text is scanned for quoted `"key": value` pairs."""
    s = text.strip()
    if level < MAX_EMBEDDED_LEVELS and 2 <= len(s) <= MAX_EMBEDDED and s[0] + s[-1] in ("{}", "[]"):
        doc = loads(s)
        if isinstance(doc, (dict, list)):
            out = _redact(doc, depth + 1, level + 1)
            return text if out == doc else dumps(out)
    return redact_json_text(text) if '":' in text or '" :' in text else text


def _redact(value: object, depth: int, level: int = 0) -> object:
    if depth > MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, dict):
        return {
            key: (redaction_tag(item) if is_secret_name(str(key)) else _redact(item, depth + 1, level))
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redact(item, depth + 1, level) for item in value]
    if isinstance(value, str):
        return _in_string(value, depth, level)
    return value


def redact_json(obj: Any) -> Any:
    """Deep copy of a JSON value: values of secret keys become tags, also in JSON held in strings."""
    try:
        return _redact(obj, 0)
    except Exception:
        return "[unredactable]"


_JSON_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]\s]*)')


def redact_json_text(text: str) -> str:
    """JSON-looking text that does not parse (cut, malformed): every `"key": value` of a secret key has
    its value replaced by a tag, as far as the text lets the pairs be found."""

    def one(m: re.Match) -> str:
        key = m.group(1)
        if not is_secret_name(key.replace('\\"', '"')):
            return m.group(0)
        return f'"{key}"{m.group(2)}"{redacted(m.group(3))}"'

    return _JSON_PAIR.sub(one, text)


# ---- command lines -----------------------------------------------------------------------------------
KEY_FORMATS = re.compile(r"""(?x) (?<![\w-]) (?:
      sk-[\w-]{8,}                              # OpenAI, Anthropic (sk-ant-…), OpenRouter (sk-or-…), DeepSeek
    | [sr]k_(?:live|test)_\w{8,}                # Stripe secret and restricted keys
    | gh[pousr]_\w{20,} | github_pat_\w{20,}    # GitHub tokens
    | xox[abposr]-[\w-]{10,}                    # Slack tokens
    | (?:AKIA|ASIA)[A-Z0-9]{16}                 # AWS access key ids
    | AIza[\w-]{30,}                            # Google API keys
    | hf_\w{20,}                                # Hugging Face tokens
    | eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]*        # JSON Web Tokens
    | 0x[0-9a-fA-F]{64,}                        # 32 bytes of hex or more: a private key, a signature, a signed tx
    ) (?![\w-])""")
_BEARER = re.compile(r"\b([Bb]earer\s+)([^\s'\"\[][^\s'\"]*)")
_URL_USER = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@\s]+)@")
_QUERY = re.compile(r"\?([^\s#'\"]+)")
_PAIRS = re.compile(r"[^\s=&/:?'\"]+=")
HEADER_FLAGS = ("-H", "--header", "--proxy-header")
USER_FLAGS = ("-u", "-U", "--user", "--proxy-user")
COOKIE_FLAGS = ("-b",)  # curl's --cookie (a secret name already): name=value data, or a file name


def redact_text(text: str) -> str:
    """Secrets that show themselves by their form, wherever they are in a text: `NAME=value` pairs of
    secret names, JSON documents, credentials in URLs, secret query parameters, `Bearer <token>` and
    values in a known key format (KEY_FORMATS)."""
    s = text.strip()
    if s[:1] in ("{", "[") and s[-1:] in ("}", "]"):
        text = _in_string(text, 0, 0)
    elif _PAIRS.match(text):
        text = redact_pairs(text)
    text = _URL_USER.sub(lambda m: m.group(1) + redacted(m.group(2)) + "@", text)
    text = _QUERY.sub(lambda m: "?" + redact_pairs(m.group(1)), text)
    text = _BEARER.sub(lambda m: m.group(1) + redacted(m.group(2)), text)
    return KEY_FORMATS.sub(lambda m: redacted(m.group(0)), text)


def _header_value(arg: str) -> str:
    """`Authorization: Bearer x` → `Authorization: [redacted …]` (the tag the stored header gets)."""
    name, colon, value = arg.partition(":")
    if colon and is_secret_name(name.strip()):
        shown = value.lstrip(" \t")
        return f"{name}:{value[: len(value) - len(shown)]}{redacted(shown.strip())}" if shown else arg
    return redact_text(arg)


def _user_value(arg: str) -> str:
    return redacted(arg) if ":" in arg else redact_text(arg)


def _cookie_value(arg: str) -> str:
    return redacted(arg) if "=" in arg else redact_text(arg)


def _flag(arg: str):
    """(inline value or None, how the flag's value is redacted, whether the value may be missing) for a
    flag that names its value, else None. A secret-named flag may be a switch (`--no-auth`): a next
    argument that is itself a flag is not taken as its value."""
    for flags, how in ((HEADER_FLAGS, _header_value), (USER_FLAGS, _user_value), (COOKIE_FLAGS, _cookie_value)):
        for flag in flags:
            if arg == flag:
                return None, how, False
            if arg.startswith(flag + "=") and flag.startswith("--"):
                return arg[len(flag) + 1 :], how, False
            if len(flag) == 2 and arg.startswith(flag) and len(arg) > 2:  # glued: -H'…', -uuser:pass
                return arg[2:], how, False
    if arg in ("Bearer", "bearer"):  # `Bearer` and its token as two arguments
        return None, redacted, True
    if arg.startswith("--") and len(arg) > 2:
        name, eq, value = arg[2:].partition("=")
        if is_secret_name(name):
            return (value if eq else None), redacted, True
    return None


def redact_argv(argv: list[str]) -> list[str]:
    """A command line fit to store: the program and ordinary arguments as they were, every secret as a
    tag (module docstring). The value of a flag is the next argument unless given with `=` or glued."""
    out, pending = list(argv[:1]), None
    for arg in argv[1:]:
        if pending is not None:
            how, optional = pending
            pending = None
            if not (optional and arg.startswith("-") and len(arg) > 1):
                out.append(how(arg))
                continue
        flag = _flag(arg)
        if flag is None:
            out.append(redact_text(arg))
            continue
        value, how, optional = flag
        if value is None:
            out.append(arg)
            pending = how, optional
        else:
            out.append(arg[: len(arg) - len(value)] + how(value))
    return out
