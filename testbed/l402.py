"""L402 (Lightning Labs' HTTP 402 protocol, formerly LSAT; bLIP-26): a paid chat route behind an
Aperture-style challenge, a real L402 client, and a simulated Lightning payment.

What is real:

- **the invoice**: a BOLT11 payment request encoded and signed (secp256k1, recoverable) with the ``bolt11``
  package (lnbits') by the test bed's node key; the payment hash is ``sha256(preimage)`` of a fresh random
  32-byte preimage, with a payment secret, a description, an expiry, ``min_final_cltv_expiry`` and features,
  as LND writes them;
- **the macaroon**: minted as Aperture mints it (``mint/mint.go``), with ``pymacaroons``: libmacaroons' V2
  binary format, location ``lsat``, identifier = version ``0`` (uint16 big-endian) ‖ payment hash (32
  bytes) ‖ random token id (32 bytes), a root key per token (kept by the server, keyed by
  ``sha256(identifier)``), first-party caveats ``services=chat:0``, ``chat_capabilities=…`` and
  ``chat_valid_until=<unix seconds>``, base64 (standard, padded) on the wire;
- **the challenge**: ``402`` with two ``WWW-Authenticate`` headers, ``LSAT macaroon="…", invoice="…"`` then
  ``L402 macaroon="…", invoice="…"`` (Aperture sends the legacy one first), ``Cache-Control: no-store`` and
  the body ``payment required`` (``schemes=("L402",)`` sends only the L402 one);
- **the verification**: Aperture's — ``Authorization: L402 <macaroon base64>:<preimage hex>`` (or ``LSAT``;
  or, as Aperture also takes it, a ``Macaroon``/``Grpc-Metadata-Macaroon`` header with the macaroon in hex and
  the preimage in a ``preimage=`` caveat: :func:`macaroon_header_value`),
  ``sha256(preimage) == payment hash`` of the identifier, the macaroon's signature under the token's root
  key, its caveats (service, expiry), and the invoice settled at the node; anything else gets a fresh
  ``402`` challenge, as Aperture answers (the reason in ``X-Testbed-L402-Deny``, a test bed header). A
  valid token is reusable until its caveats expire (no new payment), as with Aperture;
- **the client**: ``l402-requests`` (PyPI), an L402 httpx client: it parses the challenge (L402 before
  LSAT), checks the invoice amount against its budget, asks its wallet to pay, and retries with
  ``Authorization: L402 <macaroon>:<preimage>``.

What is simulated: **the Lightning payment**. No Lightning node runs here: the wallet
(:class:`TestbedWallet`, an ``l402-requests`` wallet) decodes and checks the invoice (signature, payment
hash), then hands it to the payee's node over the test bed route ``POST /testbed/lightning/pay`` — straight
to the server, never through a proxy — which marks the invoice settled and returns its preimage, as a
settled HTLC would reveal it. The wallet checks ``sha256(preimage) == payment hash`` before using it.

The server also serves Cloudflare's pay-per-crawl routes (:mod:`testbed.crawler`, ``GET /crawl/…``).

Free routes: ``GET /healthz``, ``GET /testbed/lightning/info`` (node public key, currency),
``GET /testbed/lightning/invoices`` (the node's invoices; preimages of settled ones only),
``POST /testbed/lightning/pay`` (the simulated payment, body ``{"invoice": "lnbc…"}``).

Run it: ``python -m testbed.l402 [--port N] [--price-msat 10000] [--currency bc] [--schemes LSAT,L402]``.
"""

# no "from __future__ import annotations" here: FastAPI must see the real Request annotation
import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

SERVICE = "chat"
CHAT_PATH = "/v1/chat/completions"
LIGHTNING_PATH = "/testbed/lightning"
DENY_HEADER = "X-Testbed-L402-Deny"
MACAROON_LOCATION = "lsat"  # Aperture's (mint/mint.go), also for L402
PREIMAGE_CAVEAT = "preimage="  # Aperture's l402.PreimageKey, for credentials in a Macaroon header
IDENTIFIER_VERSION = 0
DEFAULT_PRICE_MSAT = 10_000  # 10 sat
DEFAULT_CAPABILITIES = "completions"
DEFAULT_VALID_SECONDS = 3600
INVOICE_EXPIRY = 3600
MIN_FINAL_CLTV_EXPIRY = 80  # LND's default
APERTURE_SCHEMES = ("LSAT", "L402")
# the test bed node's secp256k1 key (a throwaway, like the dev accounts of testbed.chain)
NODE_KEY = hashlib.sha256(b"receipts testbed lightning node").hexdigest()

# Aperture's l402/header.go: the macaroon(s) are base64, the preimage 64 hex digits
AUTH_RE = re.compile(r"(LSAT|L402) (.*?):([a-f0-9]{64})")
CHALLENGE_RE = re.compile(r'(L402|LSAT)\s+macaroon="([^"]+)",\s*invoice="([^"]+)"', re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# The wire: identifiers, macaroons, challenges, invoices
# ---------------------------------------------------------------------------------------------


def node_pubkey(key: str = NODE_KEY) -> str:
    """The node's compressed public key (hex), the payee of its invoices."""
    from coincurve import PrivateKey

    return PrivateKey.from_hex(key).public_key.format(compressed=True).hex()


def encode_identifier(payment_hash: bytes, token_id: bytes, version: int = IDENTIFIER_VERSION) -> bytes:
    """Aperture's macaroon identifier (``l402/identifier.go``): uint16 version ‖ payment hash ‖ token id."""
    if version != 0 or len(payment_hash) != 32 or len(token_id) != 32:
        raise ValueError("version 0 identifiers hold a 32-byte payment hash and a 32-byte token id")
    return version.to_bytes(2, "big") + payment_hash + token_id


def decode_identifier(raw: bytes) -> dict:
    """``{"version", "payment_hash", "token_id"}`` (hex) of an Aperture identifier; ValueError otherwise."""
    if len(raw) < 2:
        raise ValueError("identifier too short")
    version = int.from_bytes(raw[:2], "big")
    if version != 0 or len(raw) != 66:
        raise ValueError(f"unknown L402 identifier version {version} / length {len(raw)}")
    return {"version": version, "payment_hash": raw[2:34].hex(), "token_id": raw[34:66].hex()}


def _b64decode(value: str) -> bytes:
    value = value.strip()
    padded = value + "=" * (-len(value) % 4)
    if "-" in value or "_" in value:
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)


def macaroon_from_b64(value: str):
    """A ``pymacaroons.Macaroon`` from its base64 binary form (V2 as Aperture sends it, or V1)."""
    from pymacaroons.serializers import BinarySerializer

    return BinarySerializer().deserialize_raw(_b64decode(value))


def macaroon_to_b64(macaroon) -> str:
    """Standard, padded base64 of the macaroon's binary form (what Aperture puts on the wire)."""
    from pymacaroons.serializers import BinarySerializer

    return base64.b64encode(BinarySerializer().serialize_raw(macaroon)).decode("ascii")


def decode_macaroon(value: str) -> dict:
    """Everything a macaroon shows without its root key: version, location, identifier (decoded if it is
    Aperture's), caveats (first-party ones as text), signature (hex). The signature is not checked."""
    m = macaroon_from_b64(value)
    ident = m.identifier_bytes
    try:
        decoded = decode_identifier(ident)
    except ValueError:
        decoded = None
    caveats = []
    for c in m.caveats:
        cid = c.caveat_id_bytes
        caveats.append({"id": cid.decode("utf-8", "replace"), "third_party": bool(c.verification_key_id),
                        "location": c.location or None})
    return {"version": m.version, "location": m.location, "identifier_hex": ident.hex(),
            "identifier": decoded, "caveats": caveats, "signature": m.signature}


def parse_challenges(values: list[str] | str) -> list[dict]:
    """Every ``L402``/``LSAT`` challenge in ``WWW-Authenticate`` value(s): ``[{"scheme", "macaroon",
    "invoice"}]`` in header order."""
    if isinstance(values, str):
        values = [values]
    return [{"scheme": m.group(1), "macaroon": m.group(2), "invoice": m.group(3)}
            for v in values for m in CHALLENGE_RE.finditer(v)]


def parse_authorization(value: str) -> dict | None:
    """``Authorization: L402 <macaroon(s)>:<preimage>`` → ``{"scheme", "macaroons": [...], "preimage"}``
    (Aperture's pattern; several macaroons are comma separated, bLIP-26); None if it does not match."""
    m = AUTH_RE.search(value or "")
    if not m:
        return None
    return {"scheme": m.group(1), "macaroons": [s for s in m.group(2).split(",") if s], "preimage": m.group(3)}


def macaroon_header_value(macaroon_b64: str, preimage: str) -> str:
    """The credential as Aperture also takes it in a ``Macaroon`` (or ``Grpc-Metadata-Macaroon``) header: the
    macaroon attenuated by the holder with a ``preimage=<hex>`` caveat, in hex (``lnd``/gRPC clients' form)."""
    from pymacaroons.serializers import BinarySerializer

    mac = macaroon_from_b64(macaroon_b64)
    mac.add_first_party_caveat(PREIMAGE_CAVEAT + preimage)
    return BinarySerializer().serialize_raw(mac).hex()


def decode_invoice(bolt11: str) -> dict:
    """The BOLT11 invoice's fields, decoded (and its signature checked) by the ``bolt11`` package."""
    import bolt11 as b11

    inv = b11.decode(bolt11)
    return {"currency": inv.currency, "amount_msat": int(inv.amount_msat) if inv.amount_msat else None,
            "timestamp": inv.date, "expiry": inv.expiry, "payment_hash": inv.payment_hash,
            "payment_secret": inv.payment_secret, "description": inv.description,
            "description_hash": inv.description_hash, "min_final_cltv_expiry": inv.min_final_cltv_expiry,
            "features": inv.features.readable if inv.features else None, "payee": inv.payee,
            "signature": inv.signature.hex if inv.signature else None,
            "recovery_flag": inv.signature.recovery_flag if inv.signature else None}


# ---------------------------------------------------------------------------------------------
# The payee's node (simulated) and the mint
# ---------------------------------------------------------------------------------------------


@dataclass
class Invoice:
    bolt11: str
    payment_hash: str
    preimage: str
    amount_msat: int
    description: str
    created: int
    expiry: int
    settled_at: float | None = None

    def public(self) -> dict:
        """As ``/testbed/lightning/invoices`` shows it: the preimage only once settled."""
        return {"bolt11": self.bolt11, "payment_hash": self.payment_hash, "amount_msat": self.amount_msat,
                "description": self.description, "created": self.created, "expiry": self.expiry,
                "settled": self.settled_at is not None, "settled_at": self.settled_at,
                "preimage": self.preimage if self.settled_at is not None else None}


class LightningNode:
    """The payee's Lightning node, simulated: it writes real signed BOLT11 invoices and keeps their preimages;
    :meth:`receive` stands for an incoming payment (the HTLC settles and the preimage goes back to the payer)."""

    def __init__(self, key: str = NODE_KEY, currency: str = "bc"):
        self.key = key
        self.currency = currency
        self.pubkey = node_pubkey(key)
        self._invoices: dict[str, Invoice] = {}
        self._lock = threading.Lock()

    def create_invoice(self, amount_msat: int, description: str, expiry: int = INVOICE_EXPIRY) -> Invoice:
        import bolt11 as b11
        from bolt11 import Feature, Features, FeatureState, MilliSatoshi, TagChar, Tags

        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        tags = Tags()
        tags.add(TagChar.payment_hash, payment_hash)
        tags.add(TagChar.payment_secret, os.urandom(32).hex())
        tags.add(TagChar.description, description)
        tags.add(TagChar.expire_time, int(expiry))
        tags.add(TagChar.min_final_cltv_expiry, MIN_FINAL_CLTV_EXPIRY)
        tags.add(TagChar.features, Features.from_feature_list({
            Feature.var_onion_optin: FeatureState.required,
            Feature.payment_secret: FeatureState.required,
            Feature.basic_mpp: FeatureState.supported,
        }))
        created = int(time.time())
        encoded = b11.encode(b11.Bolt11(currency=self.currency, date=created, tags=tags,
                                        amount_msat=MilliSatoshi(int(amount_msat))), private_key=self.key)
        invoice = Invoice(encoded, payment_hash, preimage.hex(), int(amount_msat), description, created, int(expiry))
        with self._lock:
            self._invoices[payment_hash] = invoice
        return invoice

    def lookup(self, payment_hash: str) -> Invoice | None:
        with self._lock:
            return self._invoices.get(payment_hash)

    def invoices(self) -> list[Invoice]:
        with self._lock:
            return list(self._invoices.values())

    def receive(self, bolt11: str) -> Invoice:
        """A payment of ``bolt11`` arrives: check it is ours and payable, settle it, return it (with its
        preimage). ValueError if not."""
        fields = decode_invoice(bolt11)  # checks the signature
        if fields["payee"] != self.pubkey:
            raise ValueError("invoice of another node")
        invoice = self.lookup(fields["payment_hash"])
        if invoice is None or invoice.bolt11 != bolt11.lower():
            raise ValueError("unknown invoice")
        if time.time() > invoice.created + invoice.expiry:
            raise ValueError("invoice expired")
        with self._lock:
            if invoice.settled_at is None:
                invoice.settled_at = time.time()
        return invoice


class Mint:
    """Aperture's mint (``mint/mint.go``) with ``pymacaroons``: one invoice and one root key per token."""

    def __init__(self, node: LightningNode, service: str = SERVICE, capabilities: str | None = DEFAULT_CAPABILITIES,
                 valid_seconds: int | None = DEFAULT_VALID_SECONDS):
        self.node = node
        self.service = service
        self.capabilities = capabilities
        self.valid_seconds = valid_seconds
        self._secrets: dict[bytes, bytes] = {}  # sha256(identifier) → root key (Aperture's SecretStore)
        self._lock = threading.Lock()

    def caveats(self) -> list[str]:
        out = [f"services={self.service}:0"]
        if self.capabilities:
            out.append(f"{self.service}_capabilities={self.capabilities}")
        if self.valid_seconds:
            out.append(f"{self.service}_valid_until={int(time.time()) + int(self.valid_seconds)}")
        return out

    def mint(self, price_msat: int, description: str) -> tuple[str, Invoice]:
        """``(macaroon base64, invoice)`` for a new token."""
        from pymacaroons import MACAROON_V2, Macaroon

        invoice = self.node.create_invoice(price_msat, description)
        identifier = encode_identifier(bytes.fromhex(invoice.payment_hash), os.urandom(32))
        secret = os.urandom(32)
        with self._lock:
            self._secrets[hashlib.sha256(identifier).digest()] = secret
        mac = Macaroon(location=MACAROON_LOCATION, identifier=identifier, key=secret, version=MACAROON_V2)
        for caveat in self.caveats():
            mac.add_first_party_caveat(caveat)
        return macaroon_to_b64(mac), invoice

    def verify(self, authorization: list[str], macaroon_hex: str | None = None) -> tuple[bool, str, str | None]:
        """Check the credential as Aperture does (``l402/header.go``, ``mint.VerifyL402``): ``Authorization``
        values first, else ``macaroon_hex`` (a ``Grpc-Metadata-Macaroon`` or ``Macaroon`` header: the macaroon
        in hex, its preimage in a ``preimage=<hex>`` caveat). Returns ``(ok, reason, payment hash)``."""
        from pymacaroons import Verifier
        from pymacaroons.exceptions import MacaroonException
        from pymacaroons.serializers import BinarySerializer

        parsed = next((p for p in map(parse_authorization, authorization) if p), None)
        try:
            if parsed is not None:
                mac = macaroon_from_b64(parsed["macaroons"][0])
            elif macaroon_hex and not authorization:
                mac = BinarySerializer().deserialize_raw(bytes.fromhex(macaroon_hex.strip()))
                preimages = [c.caveat_id_bytes.decode("utf-8", "replace")[len(PREIMAGE_CAVEAT):]
                             for c in mac.caveats if c.caveat_id_bytes.startswith(PREIMAGE_CAVEAT.encode())]
                if not preimages or not re.fullmatch(r"[a-f0-9]{64}", preimages[-1]):
                    return False, "preimage caveat not found", None
                parsed = {"scheme": "macaroon", "macaroons": [], "preimage": preimages[-1]}
            else:
                return False, "no L402 authorization" if not authorization else "invalid auth header format", None
            ident = decode_identifier(mac.identifier_bytes)
        except Exception as e:
            return False, f"bad macaroon: {e}", None
        payment_hash = ident["payment_hash"]
        if not hmac.compare_digest(hashlib.sha256(bytes.fromhex(parsed["preimage"])).hexdigest(), payment_hash):
            return False, f"invalid preimage for payment hash {payment_hash}", payment_hash
        with self._lock:
            secret = self._secrets.get(hashlib.sha256(mac.identifier_bytes).digest())
        if secret is None:
            return False, "secret not found", payment_hash
        verifier = Verifier()
        verifier.satisfy_general(self._satisfied)
        try:
            verifier.verify(mac, secret)
        except MacaroonException as e:
            return False, f"macaroon: {e}", payment_hash
        invoice = self.node.lookup(payment_hash)
        if invoice is None or invoice.settled_at is None:
            return False, "invoice not settled", payment_hash
        return True, "ok", payment_hash

    def _satisfied(self, caveat: str) -> bool:
        cond, sep, value = caveat.partition("=")
        if not sep:
            return True  # Aperture skips caveats it cannot decode
        if cond == "services":
            return any(s.split(":")[0] == self.service for s in value.split(","))
        if cond == f"{self.service}_valid_until":
            try:
                return time.time() < int(value)
            except ValueError:
                return False
        return True  # capabilities and others: not enforced by Aperture's proxy itself


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------


def create_app(*, price_msat: int = DEFAULT_PRICE_MSAT, currency: str = "bc", schemes=APERTURE_SCHEMES,
               capabilities: str | None = DEFAULT_CAPABILITIES, valid_seconds: int | None = DEFAULT_VALID_SECONDS,
               crawl_price: str = "USD 0.01", node_key: str = NODE_KEY):
    """The L402 server (see module doc). ``schemes``: the ``WWW-Authenticate`` challenges sent, in order."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    from .crawler import add_crawler_routes
    from .server import chat_completion

    for s in schemes:
        if s not in APERTURE_SCHEMES:
            raise ValueError(f"unknown scheme {s!r}")
    node = LightningNode(node_key, currency)
    mint = Mint(node, capabilities=capabilities, valid_seconds=valid_seconds)
    app = FastAPI(title="testbed L402", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.node, app.state.mint = node, mint

    def challenge(reason: str | None) -> PlainTextResponse:
        macaroon, invoice = mint.mint(price_msat, f"{SERVICE} (testbed L402)")
        response = PlainTextResponse("payment required\n", status_code=402, headers={"Cache-Control": "no-store"})
        for scheme in schemes:
            response.headers.append("WWW-Authenticate", f'{scheme} macaroon="{macaroon}", invoice="{invoice.bolt11}"')
        if reason:
            response.headers[DENY_HEADER] = reason
        return response

    @app.middleware("http")
    async def request_id(request: Request, call_next):
        response = await call_next(request)
        response.headers["x-request-id"] = "req_" + uuid.uuid4().hex
        return response

    @app.get("/healthz")
    async def healthz():
        return {"ok": True, "price_msat": price_msat, "currency": currency, "schemes": list(schemes),
                "node": node.pubkey, "crawl_price": crawl_price}

    @app.post(CHAT_PATH)
    async def chat(request: Request):
        values = request.headers.getlist("authorization")
        macaroon_hex = request.headers.get("grpc-metadata-macaroon") or request.headers.get("macaroon")
        ok, reason, _ = mint.verify(values, macaroon_hex)
        if not ok:
            return challenge(reason if values or macaroon_hex else None)
        try:
            req = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": {"message": "body is not JSON", "type": "invalid_request_error"}},
                                status_code=400)
        return JSONResponse(chat_completion(req if isinstance(req, dict) else {}))

    @app.get(LIGHTNING_PATH + "/info")
    async def info():
        return {"pubkey": node.pubkey, "currency": currency}

    @app.get(LIGHTNING_PATH + "/invoices")
    async def invoices():
        return {"invoices": [i.public() for i in node.invoices()]}

    @app.post(LIGHTNING_PATH + "/pay")
    async def pay_invoice(request: Request):
        try:
            body = json.loads(await request.body() or b"{}")
            invoice = node.receive(str(body["invoice"]))
        except Exception as e:
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=400)
        return {"payment_hash": invoice.payment_hash, "preimage": invoice.preimage,
                "amount_msat": invoice.amount_msat, "settled_at": invoice.settled_at}

    add_crawler_routes(app, crawl_price)
    return app


# ---------------------------------------------------------------------------------------------
# The client: l402-requests with the test bed's wallet
# ---------------------------------------------------------------------------------------------


class TestbedWallet:
    """A wallet for ``l402-requests`` (its ``WalletBase`` interface: ``pay_invoice``, ``pay_invoice_sync``,
    ``supports_preimage``) whose payments are simulated: it decodes the invoice (``bolt11``, signature
    checked), has the payee's node settle it (``POST <lightning_url>/testbed/lightning/pay``, direct, never
    through a proxy) and checks the preimage it gets against the payment hash, as a wallet checks a settled
    payment. ``preimage_override`` (hex) is handed to the client instead of the real preimage (a wrong proof,
    for failure tests); the payment still happens. ``max_amount_msat`` refuses dearer invoices."""

    __test__ = False  # not a pytest class
    supports_preimage = True

    def __init__(self, lightning_url: str, *, verify: Any = True, preimage_override: str | None = None,
                 max_amount_msat: int | None = None):
        self.lightning_url = lightning_url.rstrip("/")
        self.verify = verify
        self.preimage_override = preimage_override
        self.max_amount_msat = max_amount_msat
        self.payments: list[dict] = []

    def pay_invoice_sync(self, bolt11: str) -> str:
        import httpx

        fields = decode_invoice(bolt11)
        if self.max_amount_msat is not None and (fields["amount_msat"] or 0) > self.max_amount_msat:
            raise ValueError(f"invoice asks {fields['amount_msat']} msat, more than {self.max_amount_msat}")
        with httpx.Client(trust_env=False, verify=self.verify, timeout=30) as http:
            r = http.post(self.lightning_url + LIGHTNING_PATH + "/pay", json={"invoice": bolt11})
        if r.status_code != 200:
            raise RuntimeError(f"payment failed: {r.text}")
        preimage = r.json()["preimage"]
        if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != fields["payment_hash"]:
            raise RuntimeError("the node returned a preimage that does not match the payment hash")
        self.payments.append({"invoice": bolt11, "payment_hash": fields["payment_hash"],
                              "amount_msat": fields["amount_msat"], "preimage": preimage})
        return self.preimage_override or preimage

    async def pay_invoice(self, bolt11: str) -> str:
        import asyncio

        return await asyncio.to_thread(self.pay_invoice_sync, bolt11)


@dataclass
class L402Call:
    """What an L402 call came to: the final response, the exchanges on the way, and the wallet's payments."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    exchanges: list = field(default_factory=list)
    payments: list[dict] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def challenge(self):
        """The first exchange answered 402."""
        return next((e for e in self.exchanges if e.status == 402), None)

    @property
    def challenges(self) -> list[dict]:
        """The 402's challenges, decoded (``scheme``, ``macaroon``, ``invoice``), in header order."""
        c = self.challenge
        if c is None:
            return []
        return parse_challenges([v for k, v in c.response_headers if k.lower() == "www-authenticate"])

    @property
    def paid(self):
        """The exchange that carried ``Authorization: L402 …``."""
        return next((e for e in reversed(self.exchanges)
                     if parse_authorization(e.request_header("authorization") or "")), None)

    @property
    def authorization(self) -> str | None:
        p = self.paid
        return p.request_header("authorization") if p else None

    @property
    def invoice(self) -> str | None:
        c = self.challenges
        return c[0]["invoice"] if c else None

    @property
    def macaroon(self) -> str | None:
        c = self.challenges
        return c[0]["macaroon"] if c else None


def pay(url: str, body: Any = None, *, lightning_url: str | None = None, method: str = "POST",
        proxy: str | None | bool = None, verify: Any = None, lightning_verify: Any = True,
        preimage_override: str | None = None, headers: dict[str, str] | None = None, timeout: float = 30.0,
        budget: Any = None) -> L402Call:
    """Make a paid call to ``url`` with ``l402-requests``' ``L402Client`` and a :class:`TestbedWallet` paying
    through ``lightning_url`` (default: ``url``'s origin). ``proxy`` and ``verify`` as in
    :func:`testbed.client.pay` (``proxy=None``: from the environment, ``False``: direct; ``verify``: bool, CA
    file or SSLContext, default ``$SSL_CERT_FILE``); ``lightning_verify`` is the TLS verification of the
    wallet's direct link to the node. ``budget``: an ``l402_requests.BudgetController`` (default none: the
    wallet pays any amount). ``body`` is sent as JSON unless it is ``bytes``/``str``."""
    from urllib.parse import urlsplit

    from l402_requests import L402Client

    from .client import Exchange, _ssl_verify, env_proxy

    if proxy is None:
        proxy = env_proxy(url)
    if lightning_url is None:
        parts = urlsplit(url)
        lightning_url = f"{parts.scheme}://{parts.netloc}"
    wallet = TestbedWallet(lightning_url, verify=lightning_verify, preimage_override=preimage_override)
    exchanges: list[Exchange] = []

    def record(response) -> None:
        request = response.request
        exchanges.append(Exchange(
            request.method, str(request.url),
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            response.status_code,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
        ))

    client = L402Client(wallet=wallet, budget=budget, proxy=proxy or None, verify=_ssl_verify(verify),
                        trust_env=False, timeout=timeout, event_hooks={"response": [record]})
    kwargs: dict[str, Any] = {}
    if isinstance(body, (bytes, str)):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    response = client.request(method, url, headers=headers, **kwargs)
    return L402Call(
        status=response.status_code,
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw],
        body=response.content,
        exchanges=exchanges,
        payments=wallet.payments,
    )


# ---------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------


@dataclass
class L402Stack:
    """A running L402 server (child process) and the ways to call it."""

    service: Any
    price_msat: int
    currency: str
    schemes: tuple[str, ...]
    crawl_price: str
    lightning_verify: Any = True

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def chat_url(self) -> str:
        return self.url + CHAT_PATH

    @property
    def node_pubkey(self) -> str:
        return node_pubkey()

    def crawl_url(self, slug: str = "hello-world") -> str:
        from .crawler import CRAWL_PATH

        return f"{self.url}{CRAWL_PATH}/{slug}"

    def pay(self, body: Any = None, *, proxy: str | None | bool = None, verify: Any = None,
            preimage_override: str | None = None, headers: dict[str, str] | None = None,
            path: str = CHAT_PATH, **kwargs: Any) -> L402Call:
        """A paid chat call (``body`` default: a one-message chat request); see :func:`pay`."""
        if body is None:
            body = {"model": "testbed-echo-1", "messages": [{"role": "user", "content": "hello over L402"}]}
        return pay(self.url + path, body, lightning_url=self.url, proxy=proxy, verify=verify,
                   lightning_verify=self.lightning_verify, preimage_override=preimage_override, headers=headers,
                   **kwargs)

    def crawl(self, slug: str = "hello-world", **kwargs: Any):
        """:func:`testbed.crawler.crawl` of ``/crawl/<slug>``."""
        from .crawler import crawl

        return crawl(self.crawl_url(slug), **kwargs)

    def invoices(self) -> list[dict]:
        """The node's invoices (direct, no proxy)."""
        import httpx

        with httpx.Client(trust_env=False, verify=self.lightning_verify, timeout=10) as http:
            return http.get(self.url + LIGHTNING_PATH + "/invoices").json()["invoices"]

    def describe(self) -> dict:
        return {"url": self.url, "chat_url": self.chat_url, "crawl_url": self.crawl_url(),
                "price_msat": self.price_msat, "currency": self.currency, "schemes": list(self.schemes),
                "node_pubkey": self.node_pubkey, "crawl_price": self.crawl_price}


@contextlib.contextmanager
def l402_stack(*, price_msat: int = DEFAULT_PRICE_MSAT, currency: str = "bc", schemes=APERTURE_SCHEMES,
               crawl_price: str = "USD 0.01", valid_seconds: int | None = DEFAULT_VALID_SECONDS,
               tls: dict | None = None, timeout: float = 30.0) -> Iterator[L402Stack]:
    """Start the L402 server as a child process on 127.0.0.1 and yield an :class:`L402Stack`; stopped on exit.

    ``tls={"cert": …, "key": …}`` serves HTTPS (URL host ``localhost``, as the certificates of
    ``tests/support/certs.py`` name); with ``"ca"`` in it the wallet's direct link checks the server against
    that CA (else it does not verify: the link stands for the Lightning network, not for HTTP)."""
    from .service import start_service

    args = ["--price-msat", str(int(price_msat)), "--currency", currency, "--schemes", ",".join(schemes),
            "--crawl-price", crawl_price, "--valid-seconds", str(int(valid_seconds or 0))]
    if tls:
        args += ["--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"])]
    service = start_service("l402", "testbed.l402", args, tls=bool(tls), url_host="localhost" if tls else None,
                            timeout=timeout)
    lightning_verify: Any = True
    if tls:
        import ssl

        lightning_verify = ssl.create_default_context(cafile=str(tls["ca"])) if tls.get("ca") else False
    try:
        yield L402Stack(service, int(price_msat), currency, tuple(schemes), crawl_price, lightning_verify)
    finally:
        service.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.l402", description="L402 + pay-per-crawl test server")
    ap.add_argument("--price-msat", type=int, default=DEFAULT_PRICE_MSAT)
    ap.add_argument("--currency", default="bc", help="BOLT11 currency prefix: bc, tb, tbs, bcrt")
    ap.add_argument("--schemes", default=",".join(APERTURE_SCHEMES),
                    help="WWW-Authenticate challenges in order (LSAT,L402 as Aperture; or L402)")
    ap.add_argument("--capabilities", default=DEFAULT_CAPABILITIES)
    ap.add_argument("--valid-seconds", type=int, default=DEFAULT_VALID_SECONDS, help="0: no expiry caveat")
    ap.add_argument("--crawl-price", default="USD 0.01")
    ap.add_argument("--fd", type=int, help="serve this inherited listening socket")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ssl-certfile")
    ap.add_argument("--ssl-keyfile")
    args = ap.parse_args(argv)

    from .service import serve_fd

    app = create_app(price_msat=args.price_msat, currency=args.currency,
                     schemes=tuple(s.strip() for s in args.schemes.split(",") if s.strip()),
                     capabilities=args.capabilities or None, valid_seconds=args.valid_seconds or None,
                     crawl_price=args.crawl_price)
    serve_fd(app, args.fd, host=args.host, port=args.port, ssl_certfile=args.ssl_certfile,
             ssl_keyfile=args.ssl_keyfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
