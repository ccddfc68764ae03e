"""A local Solana test chain: the real SVM (LiteSVM) behind our own JSON-RPC layer.

What is real
    * Execution. Every transaction runs in ``solders.litesvm.LiteSVM``, the Solana virtual machine
      with the real builtin programs and the default SPL programs (Token, Token-2022, Associated
      Token Account, Memo). Balances change because the programs ran, not because we wrote them.
    * Signatures. Ed25519 signatures are checked (by us before forwarding, as a real RPC node does,
      and again by the SVM); a transaction with a missing or wrong signature does not land.
    * Blockhashes. The SVM rejects a transaction whose blockhash is not its current one
      (``BlockhashNotFound``): such a transaction does not land, exactly as on a real chain.
    * Fees. The fee payer is charged what the SVM charges: 5,000 lamports per signature (LiteSVM
      charges no prioritisation fee, so a compute-unit price changes nothing here). A transaction
      that fails inside a program still lands, with ``meta.err`` set and the fee charged.

What is ours (not real)
    * The JSON-RPC surface (:data:`RPC_METHODS`). It follows Solana's documented request and response
      shapes closely enough for solana-py (whose solders parsers check them) and the x402 SDK, but
      it is a reimplementation: only the methods listed exist, and ``jsonParsed`` knows a few
      instructions (SPL token ``transfer``/``transferChecked``/``mintTo``/``mintToChecked``,
      memo, system ``transfer``); others come back unparsed (``programId``, ``accounts``, base58
      ``data``), as a real node does for programs it has no parser for.
    * Slots and commitment. There is one node, no gossip, no votes, no forks. A slot counter stands
      in for the chain: ``tip`` grows by :meth:`SolanaNode.advance` and, if ``slot_interval`` is
      set, with wall time. A transaction lands in the block of the current tip slot and is
      ``processed`` until the tip is ``confirm_depth`` slots past it, then ``confirmed``, then
      ``finalized`` once the tip is ``finalize_depth`` slots past it. Defaults: ``confirm_depth=0``
      (a lone validator's own vote is the supermajority, so its blocks are confirmed at once) and
      ``finalize_depth=32`` (a block is rooted after 32 more, as with Solana's vote lockouts), with
      slots advancing only when a test calls ``advance``. Account reads ignore the commitment asked
      for (there is one state, the latest); transaction reads (``getTransaction``,
      ``getSignaturesForAddress``) honour it.
    * One blockhash at a time. LiteSVM accepts only its latest blockhash, where a real chain accepts
      any of the last 150. The node rotates it when it is 150 slots old (and when a test calls
      :meth:`SolanaNode.expire_blockhash`), so ``lastValidBlockHeight`` is what the node enforces.
    * Setup. A faucet account is funded at genesis; the helpers (:meth:`SolanaNode.airdrop`,
      :meth:`SolanaNode.create_mint`, :meth:`SolanaNode.create_ata`, :meth:`SolanaNode.mint_to`)
      send ordinary transactions from it, which land and are recorded like any other.
    * Not supported: address lookup tables, websockets/subscriptions, blocks (``getBlock``),
      account reads at past slots.

Usage::

    with SolanaNode() as node:                  # serves JSON-RPC on 127.0.0.1:<free port>
        node.airdrop(fee_payer.pubkey(), 10**9)
        mint = node.create_mint(authority.pubkey())            # 6 decimals, USDC-like
        node.mint_to(mint, authority, payer.pubkey(), 10 * 10**6)
        node.create_ata(payee, mint)
        ...  # point solana-py / the x402 SDK at node.url
        node.advance(32)                        # what has landed is now finalized
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import solders
from solders.account import Account
from solders.clock import Clock
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import TransactionMetadata
from solders.transaction_status import TransactionErrorFieldless, TransactionStatus

SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
MEMO_PROGRAM = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
MEMO_V1_PROGRAM = Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")
TOKEN_PROGRAMS = (TOKEN_PROGRAM, TOKEN_2022_PROGRAM)
MEMO_PROGRAMS = (MEMO_PROGRAM, MEMO_V1_PROGRAM)

LAMPORTS_PER_SIGNATURE = 5_000
MAX_BLOCKHASH_AGE = 150
"""Slots a blockhash stays usable, as on Solana (MAX_PROCESSING_AGE)."""
FAUCET_LAMPORTS = 10**9 * 10**9
"""What the faucet holds at genesis: a billion SOL."""
MINT_SIZE = 82
TOKEN_ACCOUNT_SIZE = 165
COMMITMENTS = ("processed", "confirmed", "finalized")

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    n, out = int.from_bytes(data, "big"), []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + _B58.index(ch)
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + n.to_bytes((n.bit_length() + 7) // 8, "big")


def ata_address(owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM) -> Pubkey:
    """The associated token account of ``owner`` for ``mint`` (the ATA program's PDA)."""
    seeds = [bytes(owner), bytes(token_program), bytes(mint)]
    return Pubkey.find_program_address(seeds, ATA_PROGRAM)[0]


class RpcError(Exception):
    """A JSON-RPC error answer: ``code``, ``message`` and optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_json(self) -> dict:
        err = {"code": self.code, "message": self.message}
        return err if self.data is None else {**err, "data": self.data}


def _invalid(message: str) -> RpcError:
    return RpcError(-32602, message)


# --- token amounts and account layouts -------------------------------------------------------

def ui_amount(amount: int, decimals: int) -> dict:
    """A token amount in RPC form: ``{amount, decimals, uiAmount, uiAmountString}``."""
    whole, frac = divmod(amount, 10**decimals)
    frac_text = str(frac).rjust(decimals, "0").rstrip("0") if decimals else ""
    text = f"{whole}.{frac_text}" if frac_text else str(whole)
    return {"amount": str(amount), "decimals": decimals, "uiAmount": float(text), "uiAmountString": text}


def _u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 8], "little")


def _optional_key(data: bytes, offset: int) -> str | None:
    """A ``COption<Pubkey>``: a 4-byte tag, then the key."""
    if int.from_bytes(data[offset:offset + 4], "little") == 0:
        return None
    return str(Pubkey.from_bytes(data[offset + 4:offset + 36]))


def _token_kind(account: Account | None) -> str | None:
    """``"mint"``, ``"account"`` or None, for an account owned by a token program."""
    if account is None or account.owner not in TOKEN_PROGRAMS:
        return None
    data = bytes(account.data)
    if len(data) == MINT_SIZE:
        return "mint"
    if len(data) == TOKEN_ACCOUNT_SIZE:
        return "account"
    # Token-2022 accounts with extensions carry their type after the 165-byte base.
    if len(data) > TOKEN_ACCOUNT_SIZE:
        return {1: "mint", 2: "account"}.get(data[TOKEN_ACCOUNT_SIZE])
    return None


# --- the ledger --------------------------------------------------------------------------------

@dataclass
class Landed:
    """A transaction that made it into a block, with what a real node keeps about it."""

    signature: str
    slot: int
    block_time: int
    tx: VersionedTransaction
    err: Any
    fee: int
    pre_balances: list[int]
    post_balances: list[int]
    pre_token_balances: list[dict]
    post_token_balances: list[dict]
    logs: list[str]
    inner: list
    units: int

    @property
    def keys(self) -> list[Pubkey]:
        return list(self.tx.message.account_keys)


def _err_json(err: Any) -> Any:
    """A solders TransactionError in Solana's JSON form (solders' own serializer does the work)."""
    if err is None:
        return None
    return json.loads(TransactionStatus(0, None, None, err, None).to_json())["err"]


def _is_writable(message: Any, index: int) -> bool:
    h, n = message.header, len(message.account_keys)
    signed = h.num_required_signatures
    if index < signed:
        writable = index < signed - h.num_readonly_signed_accounts
    else:
        writable = index < n - h.num_readonly_unsigned_accounts
    # The runtime demotes invoked programs to read-only.
    return writable and not message.is_key_called_as_program(index)


# --- instruction rendering ---------------------------------------------------------------------

def _parse_token(keys: list[str], data: bytes) -> dict | None:
    kind = data[0] if data else None
    if kind == 3 and len(keys) >= 3 and len(data) >= 9:
        info = {"source": keys[0], "destination": keys[1], "amount": str(_u64(data, 1))}
        return {"type": "transfer", "info": _with_authority(info, keys, 2, "authority")}
    if kind == 7 and len(keys) >= 3 and len(data) >= 9:
        info = {"mint": keys[0], "account": keys[1], "amount": str(_u64(data, 1))}
        return {"type": "mintTo", "info": _with_authority(info, keys, 2, "mintAuthority")}
    if kind == 12 and len(keys) >= 4 and len(data) >= 10:
        info = {"source": keys[0], "mint": keys[1], "destination": keys[2],
                "tokenAmount": ui_amount(_u64(data, 1), data[9])}
        return {"type": "transferChecked", "info": _with_authority(info, keys, 3, "authority")}
    if kind == 14 and len(keys) >= 3 and len(data) >= 10:
        info = {"mint": keys[0], "account": keys[1], "tokenAmount": ui_amount(_u64(data, 1), data[9])}
        return {"type": "mintToChecked", "info": _with_authority(info, keys, 2, "mintAuthority")}
    return None


def _with_authority(info: dict, keys: list[str], at: int, name: str) -> dict:
    """Name the signing authority; with more accounts after it, it is a multisig (as Solana's parser says)."""
    if len(keys) > at + 1:
        return {**info, f"multisig{name[0].upper()}{name[1:]}": keys[at], "signers": keys[at + 1:]}
    return {**info, name: keys[at]}


def _parse_system(keys: list[str], data: bytes) -> dict | None:
    if len(data) >= 12 and int.from_bytes(data[:4], "little") == 2 and len(keys) >= 2:
        return {"type": "transfer", "info": {"source": keys[0], "destination": keys[1], "lamports": _u64(data, 4)}}
    return None


def _parsed_instruction(program: Pubkey, keys: list[str], data: bytes) -> dict | None:
    """``{program, programId, parsed}`` for the instructions we parse, else None."""
    if program in MEMO_PROGRAMS:
        try:
            return {"program": "spl-memo", "programId": str(program), "parsed": data.decode("utf-8")}
        except UnicodeDecodeError:
            return None
    parsers: dict[Pubkey, tuple[str, Callable]] = {
        TOKEN_PROGRAM: ("spl-token", _parse_token),
        TOKEN_2022_PROGRAM: ("spl-token", _parse_token),
        SYSTEM_PROGRAM: ("system", _parse_system),
    }
    name, parse = parsers.get(program, (None, None))
    parsed = parse(keys, data) if parse else None
    return {"program": name, "programId": str(program), "parsed": parsed} if parsed else None


def _render_instruction(keys: list[Pubkey], ix: Any, stack_height: int | None, parsed: bool) -> dict:
    """One compiled instruction as ``json`` (indices) or ``jsonParsed`` (names, parsed if known)."""
    data = bytes(ix.data)
    if not parsed:
        return {"programIdIndex": ix.program_id_index, "accounts": list(bytes(ix.accounts)),
                "data": b58encode(data), "stackHeight": stack_height}
    program = keys[ix.program_id_index]
    accounts = [str(keys[i]) for i in bytes(ix.accounts)]
    known = _parsed_instruction(program, accounts, data)
    if known:
        return {**known, "stackHeight": stack_height}
    return {"programId": str(program), "accounts": accounts, "data": b58encode(data), "stackHeight": stack_height}


def _render_inner(keys: list[Pubkey], inner: list, parsed: bool) -> list[dict]:
    return [
        {"index": i, "instructions": [_render_instruction(keys, _inner_field(x, "instruction"),
                                                          _inner_field(x, "stack_height"), parsed) for x in group]}
        for i, group in enumerate(inner) if group
    ]


def _inner_field(inner_ix: Any, name: str) -> Any:
    """A field of a solders InnerInstruction: a method in solders 0.27, a property in older releases."""
    value = getattr(inner_ix, name)
    return value() if callable(value) else value


def _memo_summary(tx: VersionedTransaction) -> str | None:
    """The ``memo`` of getSignaturesForAddress: ``[length] text`` per memo, joined by ``; ``."""
    keys, memos = list(tx.message.account_keys), []
    for ix in tx.message.instructions:
        if keys[ix.program_id_index] in MEMO_PROGRAMS:
            data = bytes(ix.data)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = "(unparseable)"
            memos.append(f"[{len(data)}] {text}")
    return "; ".join(memos) or None


# --- the node ----------------------------------------------------------------------------------
# The genesis hash the node claims: devnet's, because the x402 SDK knows only the public clusters' network
# ids (`solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1` is its first 32 characters); the chain is this process's.
DEVNET_GENESIS = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"


class SolanaNode:
    """A LiteSVM chain served as Solana JSON-RPC on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, confirm_depth: int = 0, finalize_depth: int = 32,
                 slot_interval: float | None = None, port: int = 0, genesis_hash: str = DEVNET_GENESIS):
        if not 0 <= confirm_depth <= finalize_depth:
            raise ValueError("need 0 <= confirm_depth <= finalize_depth")
        self.confirm_depth, self.finalize_depth = confirm_depth, finalize_depth
        self.slot_interval = slot_interval
        self.genesis_hash = genesis_hash  # (what getGenesisHash says: its first 32 characters are the CAIP-2 id)
        self._lock = threading.RLock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._advanced = 0
        self._clock_slot = -1  # the first _sync sets the Clock sysvar (slot and wall time)
        self._blockhash_slot = 0
        self._setup_count = 0
        self._ledger: dict[str, Landed] = {}
        self._by_address: dict[str, list[str]] = {}
        self.svm = LiteSVM()
        self.faucet = Keypair()
        # Genesis state, like a genesis config's funded accounts: written, not transferred.
        self.svm.set_account(self.faucet.pubkey(), Account(FAUCET_LAMPORTS, b"", SYSTEM_PROGRAM))

    # -- lifecycle --

    def start(self) -> SolanaNode:
        handler = type("Handler", (_RpcHandler,), {"node": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        # A short poll interval keeps stop() quick (shutdown waits for the serving loop to notice).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="solana-node", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> SolanaNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._server:
            raise RuntimeError("the node is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- slots, commitment, blockhash --

    def tip(self) -> int:
        """The newest slot: manual advances plus, with ``slot_interval``, elapsed time."""
        ticks = int((time.monotonic() - self._t0) / self.slot_interval) if self.slot_interval else 0
        return self._advanced + ticks

    def advance(self, slots: int = 1) -> int:
        """Move the tip ``slots`` ahead (deeper confirmations, older blockhash); returns the new tip."""
        if slots < 0:
            raise ValueError("slots cannot go backwards")
        with self._lock:
            self._advanced += slots
            self._sync()
            return self.tip()

    def expire_blockhash(self) -> None:
        """Replace the blockhash now: transactions signed over the old one no longer land."""
        with self._lock:
            self.svm.expire_blockhash()
            self._blockhash_slot = self.tip()

    def _sync(self) -> None:
        """Bring the SVM's clock to the tip and retire a blockhash older than 150 slots (lock held)."""
        tip = self.tip()
        if tip != self._clock_slot:
            c = self.svm.get_clock()
            now = int(time.time())
            self.svm.set_clock(Clock(tip, c.epoch_start_timestamp, c.epoch, c.leader_schedule_epoch, now))
            self._clock_slot = tip
        if tip > self._blockhash_slot + MAX_BLOCKHASH_AGE:
            self.svm.expire_blockhash()
            self._blockhash_slot = tip

    def commitment_of(self, slot: int) -> str:
        """How settled a block at ``slot`` is now."""
        depth = self.tip() - slot
        if depth >= self.finalize_depth:
            return "finalized"
        return "confirmed" if depth >= self.confirm_depth else "processed"

    def slot_at(self, commitment: str) -> int:
        """The newest slot that has reached ``commitment``."""
        depth = {"processed": 0, "confirmed": self.confirm_depth, "finalized": self.finalize_depth}[commitment]
        return max(0, self.tip() - depth)

    # -- landing transactions --

    def submit(self, tx: VersionedTransaction) -> Landed | None:
        """Execute ``tx``; the record if it landed (success or program error), None if it was dropped."""
        with self._lock:
            self._sync()
            keys = list(tx.message.account_keys)
            pre = self._snapshot(keys)
            result = self.svm.send_transaction(tx)
            signature = tx.signatures[0]
            if not self._landed(result, signature):
                return None
            post = self._snapshot(keys)
            meta = result if isinstance(result, TransactionMetadata) else result.meta()
            err = None if isinstance(result, TransactionMetadata) else _err_json(result.err())
            record = Landed(
                signature=str(signature), slot=self.tip(), block_time=int(time.time()), tx=tx, err=err,
                fee=LAMPORTS_PER_SIGNATURE * tx.message.header.num_required_signatures,
                pre_balances=pre[0], post_balances=post[0],
                pre_token_balances=pre[1], post_token_balances=post[1],
                logs=list(meta.logs()), inner=meta.inner_instructions(), units=meta.compute_units_consumed(),
            )
            self._record(record)
            return record

    def _landed(self, result: Any, signature: Any) -> bool:
        """Did the SVM commit the transaction? Failures before execution (bad blockhash, signature,
        fee payer, a replay) leave no trace and, as on a real chain, the transaction never lands."""
        if isinstance(result, TransactionMetadata):
            return True
        if result.err() == TransactionErrorFieldless.AlreadyProcessed:
            return False
        return self.svm.get_transaction(signature) is not None

    def _snapshot(self, keys: list[Pubkey]) -> tuple[list[int], list[dict]]:
        """Lamports of every key, and token balances of the token accounts among them."""
        accounts = [self.svm.get_account(k) for k in keys]
        lamports = [a.lamports if a else 0 for a in accounts]
        tokens = [self._token_balance_entry(i, a) for i, a in enumerate(accounts) if _token_kind(a) == "account"]
        return lamports, tokens

    def _token_balance_entry(self, index: int, account: Account) -> dict:
        data = bytes(account.data)
        mint = Pubkey.from_bytes(data[:32])
        return {"accountIndex": index, "mint": str(mint), "owner": str(Pubkey.from_bytes(data[32:64])),
                "programId": str(account.owner), "uiTokenAmount": ui_amount(_u64(data, 64), self._decimals(mint))}

    def _decimals(self, mint: Pubkey) -> int:
        """A mint's decimals (lock held)."""
        account = self.svm.get_account(mint)
        if _token_kind(account) != "mint":
            raise ValueError(f"{mint} is not a token mint")
        return bytes(account.data)[44]

    def _record(self, record: Landed) -> None:
        self._ledger[record.signature] = record
        for key in dict.fromkeys(str(k) for k in record.keys):
            self._by_address.setdefault(key, []).append(record.signature)

    def transaction(self, signature: str) -> Landed | None:
        """The landed transaction with this signature, if any."""
        with self._lock:
            return self._ledger.get(signature)

    # -- setup helpers (ordinary transactions paid by the faucet) --

    def _setup(self, instructions: list[Instruction], signers: tuple[Keypair, ...] = ()) -> Landed:
        """Land a setup transaction or raise; a numbered memo keeps repeated setups distinct."""
        with self._lock:
            self._setup_count += 1
            memo = Instruction(MEMO_PROGRAM, f"testbed setup {self._setup_count}".encode(), [])
            message = MessageV0.try_compile(self.faucet.pubkey(), [*instructions, memo], [],
                                            self.svm.latest_blockhash())
            record = self.submit(VersionedTransaction(message, [self.faucet, *signers]))
        if record is None or record.err is not None:
            raise RuntimeError(f"setup transaction failed: {record.err if record else 'dropped'}")
        return record

    def airdrop(self, to: Pubkey, lamports: int) -> str:
        """Send ``lamports`` from the faucet; returns the signature."""
        ix = transfer(TransferParams(from_pubkey=self.faucet.pubkey(), to_pubkey=to, lamports=lamports))
        return self._setup([ix]).signature

    def create_mint(self, authority: Pubkey, decimals: int = 6, token_program: Pubkey = TOKEN_PROGRAM) -> Pubkey:
        """A new initialized mint (no freeze authority) whose mint authority is ``authority``."""
        mint = Keypair()
        with self._lock:
            rent = self.svm.minimum_balance_for_rent_exemption(MINT_SIZE)
        create = create_account(CreateAccountParams(from_pubkey=self.faucet.pubkey(), to_pubkey=mint.pubkey(),
                                                    lamports=rent, space=MINT_SIZE, owner=token_program))
        # InitializeMint2: [20, decimals, mint authority, COption freeze authority = None]
        init = Instruction(token_program, bytes([20, decimals]) + bytes(authority) + b"\0",
                           [AccountMeta(mint.pubkey(), is_signer=False, is_writable=True)])
        self._setup([create, init], (mint,))
        return mint.pubkey()

    def token_program_of(self, mint: Pubkey) -> Pubkey:
        """The token program (Token or Token-2022) that owns ``mint``."""
        with self._lock:
            account = self.svm.get_account(mint)
        if _token_kind(account) != "mint":
            raise ValueError(f"{mint} is not a token mint")
        return account.owner

    def create_ata(self, owner: Pubkey, mint: Pubkey) -> Pubkey:
        """Create (idempotently) the associated token account of ``owner`` for ``mint``."""
        program = self.token_program_of(mint)
        ata = ata_address(owner, mint, program)
        with self._lock:
            exists = self.svm.get_account(ata) is not None
        if not exists:
            self._setup([self._create_ata_ix(owner, mint, ata, program)])
        return ata

    def _create_ata_ix(self, owner: Pubkey, mint: Pubkey, ata: Pubkey, program: Pubkey) -> Instruction:
        metas = [AccountMeta(self.faucet.pubkey(), True, True), AccountMeta(ata, False, True),
                 AccountMeta(owner, False, False), AccountMeta(mint, False, False),
                 AccountMeta(SYSTEM_PROGRAM, False, False), AccountMeta(program, False, False)]
        return Instruction(ATA_PROGRAM, bytes([1]), metas)  # 1 = CreateIdempotent

    def mint_to(self, mint: Pubkey, authority: Keypair, owner: Pubkey, amount: int) -> Pubkey:
        """Mint ``amount`` (base units) to ``owner``'s ATA, creating it if needed; returns the ATA."""
        ata = self.create_ata(owner, mint)
        program = self.token_program_of(mint)
        with self._lock:
            decimals = self._decimals(mint)
        # MintToChecked: [14, u64 amount, decimals]
        data = bytes([14]) + amount.to_bytes(8, "little") + bytes([decimals])
        metas = [AccountMeta(mint, False, True), AccountMeta(ata, False, True),
                 AccountMeta(authority.pubkey(), True, False)]
        self._setup([Instruction(program, data, metas)], (authority,))
        return ata

    def transfer_tokens(self, mint: Pubkey, owner: Keypair, to: Pubkey, amount: int) -> str:
        """Send ``amount`` (base units) of ``mint`` from ``owner``'s ATA to ``to``'s (created if needed), as
        ``owner`` would (TransferChecked, the faucet paying the fee, as for a refund); returns the signature."""
        program = self.token_program_of(mint)
        source, destination = ata_address(owner.pubkey(), mint, program), self.create_ata(to, mint)
        with self._lock:
            decimals = self._decimals(mint)
        # TransferChecked: [12, u64 amount, decimals]; source, mint, destination, owner
        data = bytes([12]) + amount.to_bytes(8, "little") + bytes([decimals])
        metas = [AccountMeta(source, False, True), AccountMeta(mint, False, False),
                 AccountMeta(destination, False, True), AccountMeta(owner.pubkey(), True, False)]
        return self._setup([Instruction(program, data, metas)], (owner,)).signature

    def token_balance(self, owner: Pubkey, mint: Pubkey) -> int:
        """``owner``'s balance of ``mint`` in base units (0 without an ATA)."""
        with self._lock:
            account = self.svm.get_account(ata_address(owner, mint, self.token_program_of(mint)))
            return _u64(bytes(account.data), 64) if _token_kind(account) == "account" else 0

    def balance(self, pubkey: Pubkey) -> int:
        with self._lock:
            return self.svm.get_balance(pubkey) or 0

    # -- JSON-RPC --

    def handle(self, request: Any) -> Any:
        """Answer one JSON-RPC request object (or a batch of them)."""
        if isinstance(request, list):
            if not 0 < len(request) <= 100:
                return _reply(None, error=RpcError(-32600, "a batch must hold 1 to 100 requests"))
            return [self._handle_one(r) for r in request]
        return self._handle_one(request)

    def _handle_one(self, request: Any) -> dict:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _reply(None, error=RpcError(-32600, "Invalid request"))
        rid, method = request.get("id"), request["method"]
        params = request.get("params") or []
        fn = RPC_METHODS.get(method)
        if fn is None:
            return _reply(rid, error=RpcError(-32601, "Method not found"))
        if not isinstance(params, list):
            return _reply(rid, error=_invalid("params must be an array"))
        try:
            return _reply(rid, result=fn(self, params))
        except RpcError as e:
            return _reply(rid, error=e)
        except (ValueError, TypeError, IndexError, KeyError) as e:
            return _reply(rid, error=_invalid(f"Invalid params: {e}"))
        except Exception as e:  # a bug here must answer the client, not kill its connection
            return _reply(rid, error=RpcError(-32603, f"Internal error: {type(e).__name__}: {e}"))

    def _context(self, config: dict) -> dict:
        return {"slot": self.slot_at(_commitment(config))}


def _reply(rid: Any, result: Any = None, error: RpcError | None = None) -> dict:
    if error is not None:
        return {"jsonrpc": "2.0", "id": rid, "error": error.to_json()}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


# --- parameter helpers -------------------------------------------------------------------------

def _param(params: list, index: int) -> Any:
    if len(params) <= index:
        raise _invalid(f"missing parameter {index}")
    return params[index]


def _config(params: list, index: int) -> dict:
    value = params[index] if len(params) > index else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"parameter {index} must be a config object")
    return value


def _commitment(config: dict, default: str = "finalized") -> str:
    level = config.get("commitment") or default
    # Old names some clients still send.
    level = {"recent": "processed", "single": "confirmed", "singleGossip": "confirmed",
             "root": "finalized", "max": "finalized"}.get(level, level)
    if level not in COMMITMENTS:
        raise _invalid(f"unknown commitment {level!r}")
    return level


def _tx_commitment(config: dict) -> str:
    level = _commitment(config)
    if level == "processed":
        raise _invalid("Method does not support commitment below `confirmed`")
    return level


def _pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise _invalid("a public key must be a base58 string")
    return Pubkey.from_string(value)


def _decode_wire(text: Any, encoding: str) -> bytes:
    if not isinstance(text, str):
        raise _invalid("a transaction must be an encoded string")
    if encoding == "base64":
        return base64.b64decode(text, validate=True)
    if encoding == "base58":
        return b58decode(text)
    raise _invalid(f"unsupported encoding {encoding!r}")


def _decode_tx(params: list) -> tuple[VersionedTransaction, dict]:
    config = _config(params, 1)
    try:
        tx = VersionedTransaction.from_bytes(_decode_wire(_param(params, 0), config.get("encoding", "base58")))
    except (ValueError, TypeError) as e:
        raise _invalid(f"failed to deserialize transaction: {e}") from None
    if isinstance(tx.message, MessageV0) and tx.message.address_table_lookups:
        raise _invalid("address lookup tables are not supported by this test node")
    return tx, config


# --- account rendering -------------------------------------------------------------------------

def _account_json(node: SolanaNode, account: Account | None, config: dict) -> dict | None:
    if account is None:
        return None
    data = bytes(account.data)
    if config.get("dataSlice"):
        start, length = config["dataSlice"]["offset"], config["dataSlice"]["length"]
        data = data[start:start + length]
    encoding = config.get("encoding", "base58")
    if encoding == "jsonParsed":
        rendered = _parsed_account(node, account) or [base64.b64encode(data).decode(), "base64"]
    elif encoding in ("base64", "base58"):
        rendered = [base64.b64encode(data).decode() if encoding == "base64" else b58encode(data), encoding]
    else:
        raise _invalid(f"unsupported encoding {encoding!r}")
    return {"lamports": account.lamports, "owner": str(account.owner), "data": rendered,
            "executable": account.executable, "rentEpoch": account.rent_epoch, "space": len(bytes(account.data))}


def _parsed_account(node: SolanaNode, account: Account) -> dict | None:
    """``jsonParsed`` data for mints and token accounts (the base layout; extensions are not listed)."""
    kind, data = _token_kind(account), bytes(account.data)
    program = "spl-token" if account.owner == TOKEN_PROGRAM else "spl-token-2022"
    if kind == "mint":
        info = {"mintAuthority": _optional_key(data, 0), "supply": str(_u64(data, 36)), "decimals": data[44],
                "isInitialized": bool(data[45]), "freezeAuthority": _optional_key(data, 46)}
    elif kind == "account":
        mint = Pubkey.from_bytes(data[:32])
        state = {0: "uninitialized", 1: "initialized", 2: "frozen"}.get(data[108], "uninitialized")
        info = {"mint": str(mint), "owner": str(Pubkey.from_bytes(data[32:64])), "state": state,
                "isNative": int.from_bytes(data[109:113], "little") == 1,
                "tokenAmount": ui_amount(_u64(data, 64), node._decimals(mint))}
    else:
        return None
    return {"program": program, "parsed": {"type": kind, "info": info}, "space": len(data)}


# --- RPC methods: chain state ------------------------------------------------------------------

def rpc_get_health(node: SolanaNode, params: list) -> str:
    return "ok"


def rpc_get_version(node: SolanaNode, params: list) -> dict:
    return {"solana-core": f"litesvm-testnode (solders {solders.__version__})", "feature-set": 0}


def rpc_get_genesis_hash(node: SolanaNode, params: list) -> str:
    return node.genesis_hash


def rpc_get_slot(node: SolanaNode, params: list) -> int:
    return node.slot_at(_commitment(_config(params, 0)))


def rpc_get_latest_blockhash(node: SolanaNode, params: list) -> dict:
    config = _config(params, 0)
    with node._lock:
        node._sync()
        value = {"blockhash": str(node.svm.latest_blockhash()),
                 "lastValidBlockHeight": node._blockhash_slot + MAX_BLOCKHASH_AGE}
        return {"context": node._context(config), "value": value}


def rpc_is_blockhash_valid(node: SolanaNode, params: list) -> dict:
    blockhash, config = _param(params, 0), _config(params, 1)
    with node._lock:
        node._sync()
        return {"context": node._context(config), "value": blockhash == str(node.svm.latest_blockhash())}


def rpc_get_fee_for_message(node: SolanaNode, params: list) -> dict:
    """The fee LiteSVM will charge, or null when the message's blockhash is no longer valid."""
    message = from_bytes_versioned(base64.b64decode(_param(params, 0), validate=True))
    config = _config(params, 1)
    with node._lock:
        node._sync()
        valid = message.recent_blockhash == node.svm.latest_blockhash()
        fee = LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures if valid else None
        return {"context": node._context(config), "value": fee}


def rpc_get_minimum_balance_for_rent_exemption(node: SolanaNode, params: list) -> int:
    size = _param(params, 0)
    if not isinstance(size, int) or size < 0:
        raise _invalid("data size must be a non-negative integer")
    with node._lock:
        return node.svm.minimum_balance_for_rent_exemption(size)


def rpc_get_balance(node: SolanaNode, params: list) -> dict:
    key, config = _pubkey(_param(params, 0)), _config(params, 1)
    with node._lock:
        return {"context": node._context(config), "value": node.svm.get_balance(key) or 0}


def rpc_get_account_info(node: SolanaNode, params: list) -> dict:
    key, config = _pubkey(_param(params, 0)), _config(params, 1)
    with node._lock:
        return {"context": node._context(config), "value": _account_json(node, node.svm.get_account(key), config)}


def rpc_get_multiple_accounts(node: SolanaNode, params: list) -> dict:
    keys, config = _param(params, 0), _config(params, 1)
    if not isinstance(keys, list) or len(keys) > 100:
        raise _invalid("give a list of at most 100 public keys")
    with node._lock:
        accounts = [_account_json(node, node.svm.get_account(_pubkey(k)), config) for k in keys]
        return {"context": node._context(config), "value": accounts}


def rpc_get_token_account_balance(node: SolanaNode, params: list) -> dict:
    key, config = _pubkey(_param(params, 0)), _config(params, 1)
    with node._lock:
        account = node.svm.get_account(key)
        if _token_kind(account) != "account":
            raise _invalid("Invalid param: not a Token account")
        data = bytes(account.data)
        value = ui_amount(_u64(data, 64), node._decimals(Pubkey.from_bytes(data[:32])))
        return {"context": node._context(config), "value": value}


def rpc_request_airdrop(node: SolanaNode, params: list) -> str:
    key, lamports = _pubkey(_param(params, 0)), _param(params, 1)
    if not isinstance(lamports, int) or lamports <= 0:
        raise _invalid("lamports must be a positive integer")
    return node.airdrop(key, lamports)


# --- RPC methods: transactions -----------------------------------------------------------------

def _simulate(node: SolanaNode, tx: VersionedTransaction, *, sig_verify: bool, replace_blockhash: bool,
              inner: bool = False) -> dict:
    """Run ``tx`` without committing it; the ``value`` of simulateTransaction."""
    with node._lock:
        node._sync()
        node.svm.with_sigverify(sig_verify).with_blockhash_check(not replace_blockhash)
        try:
            result = node.svm.simulate_transaction(tx)
        finally:
            node.svm.with_sigverify(True).with_blockhash_check(True)
        failed = not hasattr(result, "post_accounts")
        meta = result.meta()
        value = {"err": _err_json(result.err()) if failed else None, "logs": list(meta.logs()),
                 "accounts": None, "unitsConsumed": meta.compute_units_consumed(), "returnData": None,
                 "innerInstructions": _render_inner(list(tx.message.account_keys), meta.inner_instructions(), True)
                 if inner else None,
                 "fee": LAMPORTS_PER_SIGNATURE * tx.message.header.num_required_signatures}
        if replace_blockhash:
            value["replacementBlockhash"] = {"blockhash": str(node.svm.latest_blockhash()),
                                             "lastValidBlockHeight": node._blockhash_slot + MAX_BLOCKHASH_AGE}
        return value


def rpc_simulate_transaction(node: SolanaNode, params: list) -> dict:
    tx, config = _decode_tx(params)
    sig_verify, replace = bool(config.get("sigVerify")), bool(config.get("replaceRecentBlockhash"))
    if sig_verify and replace:
        raise _invalid("sigVerify may not be used with replaceRecentBlockhash")
    value = _simulate(node, tx, sig_verify=sig_verify, replace_blockhash=replace,
                      inner=bool(config.get("innerInstructions")))
    return {"context": node._context(config), "value": value}


def rpc_send_transaction(node: SolanaNode, params: list) -> str:
    """Forward a signed transaction. Like a real node: signatures are checked first; preflight
    simulation unless ``skipPreflight``; and a transaction that cannot land (expired blockhash,
    replay, unfunded fee payer) is silently dropped after its signature is returned."""
    tx, config = _decode_tx(params)
    if not all(tx.verify_with_results()):
        raise RpcError(-32003, "Transaction signature verification failure")
    if not config.get("skipPreflight"):
        value = _simulate(node, tx, sig_verify=True, replace_blockhash=False)
        if value["err"] is not None:
            err = value["err"]
            detail = err if isinstance(err, str) else json.dumps(err)
            raise RpcError(-32002, f"Transaction simulation failed: {detail}", value)
    node.submit(tx)
    return str(tx.signatures[0])


def rpc_get_signature_statuses(node: SolanaNode, params: list) -> dict:
    signatures = _param(params, 0)
    if not isinstance(signatures, list) or len(signatures) > 256:
        raise _invalid("give a list of at most 256 signatures")
    with node._lock:
        return {"context": {"slot": node.tip()}, "value": [_status(node, s) for s in signatures]}


def _status(node: SolanaNode, signature: str) -> dict | None:
    record = node._ledger.get(signature)
    if record is None:
        return None
    level = node.commitment_of(record.slot)
    return {"slot": record.slot, "confirmations": None if level == "finalized" else node.tip() - record.slot,
            "err": record.err, "status": {"Ok": None} if record.err is None else {"Err": record.err},
            "confirmationStatus": level}


def _reached(node: SolanaNode, record: Landed, level: str) -> bool:
    return COMMITMENTS.index(node.commitment_of(record.slot)) >= COMMITMENTS.index(level)


def rpc_get_transaction(node: SolanaNode, params: list) -> dict | None:
    signature = _param(params, 0)
    second = params[1] if len(params) > 1 else None
    config = {"encoding": second} if isinstance(second, str) else _config(params, 1)  # the old positional form
    level, encoding = _tx_commitment(config), config.get("encoding", "json")
    with node._lock:
        record = node._ledger.get(signature)
        if record is None or not _reached(node, record, level):
            return None
        v0 = isinstance(record.tx.message, MessageV0)
        if v0 and config.get("maxSupportedTransactionVersion") is None:
            raise RpcError(-32015, "Transaction version (0) is not supported by the requesting client. "
                                   "Please try the request again with the following configuration parameter: "
                                   "\"maxSupportedTransactionVersion\": 0")
        result = {"slot": record.slot, "blockTime": record.block_time,
                  "meta": _meta_json(record, encoding), "transaction": _tx_json(record, encoding)}
        if config.get("maxSupportedTransactionVersion") is not None:
            result["version"] = 0 if v0 else "legacy"
        return result


def _meta_json(record: Landed, encoding: str) -> dict:
    parsed = encoding == "jsonParsed"
    meta = {"err": record.err, "status": {"Ok": None} if record.err is None else {"Err": record.err},
            "fee": record.fee, "preBalances": record.pre_balances, "postBalances": record.post_balances,
            "innerInstructions": _render_inner(record.keys, record.inner, parsed),
            "logMessages": record.logs, "preTokenBalances": record.pre_token_balances,
            "postTokenBalances": record.post_token_balances, "rewards": [],
            "computeUnitsConsumed": record.units}
    if not parsed:
        meta["loadedAddresses"] = {"writable": [], "readonly": []}
    return meta


def _tx_json(record: Landed, encoding: str) -> Any:
    tx, message = record.tx, record.tx.message
    if encoding in ("base64", "base58"):
        raw = bytes(tx)
        return [base64.b64encode(raw).decode() if encoding == "base64" else b58encode(raw), encoding]
    if encoding not in ("json", "jsonParsed"):
        raise _invalid(f"unsupported encoding {encoding!r}")
    parsed, keys = encoding == "jsonParsed", record.keys
    body = {"recentBlockhash": str(message.recent_blockhash),
            "instructions": [_render_instruction(keys, ix, None, parsed) for ix in message.instructions]}
    if parsed:
        body["accountKeys"] = [{"pubkey": str(k), "signer": i < message.header.num_required_signatures,
                                "writable": _is_writable(message, i), "source": "transaction"}
                               for i, k in enumerate(keys)]
    else:
        h = message.header
        body["header"] = {"numRequiredSignatures": h.num_required_signatures,
                          "numReadonlySignedAccounts": h.num_readonly_signed_accounts,
                          "numReadonlyUnsignedAccounts": h.num_readonly_unsigned_accounts}
        body["accountKeys"] = [str(k) for k in keys]
    if isinstance(message, MessageV0):
        body["addressTableLookups"] = []
    return {"signatures": [str(s) for s in tx.signatures], "message": body}


def rpc_get_signatures_for_address(node: SolanaNode, params: list) -> list[dict]:
    address, config = str(_pubkey(_param(params, 0))), _config(params, 1)
    limit, level = config.get("limit") or 1000, _tx_commitment(config)
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise _invalid("Invalid limit; max 1000")
    with node._lock:
        newest_first = list(reversed(node._by_address.get(address, [])))
        newest_first = _between(newest_first, config.get("before"), config.get("until"))
        records = [node._ledger[s] for s in newest_first if _reached(node, node._ledger[s], level)]
        return [{"signature": r.signature, "slot": r.slot, "err": r.err, "memo": _memo_summary(r.tx),
                 "blockTime": r.block_time, "confirmationStatus": node.commitment_of(r.slot)}
                for r in records[:limit]]


def _between(signatures: list[str], before: str | None, until: str | None) -> list[str]:
    """The signatures older than ``before`` and newer than ``until`` (both exclusive)."""
    if before in signatures:
        signatures = signatures[signatures.index(before) + 1:]
    if until in signatures:
        signatures = signatures[:signatures.index(until)]
    return signatures


RPC_METHODS: dict[str, Callable[[SolanaNode, list], Any]] = {
    "getHealth": rpc_get_health,
    "getVersion": rpc_get_version,
    "getGenesisHash": rpc_get_genesis_hash,
    "getSlot": rpc_get_slot,
    "getBlockHeight": rpc_get_slot,  # no skipped slots here: height == slot
    "getLatestBlockhash": rpc_get_latest_blockhash,
    "isBlockhashValid": rpc_is_blockhash_valid,
    "getFeeForMessage": rpc_get_fee_for_message,
    "getMinimumBalanceForRentExemption": rpc_get_minimum_balance_for_rent_exemption,
    "getBalance": rpc_get_balance,
    "getAccountInfo": rpc_get_account_info,
    "getMultipleAccounts": rpc_get_multiple_accounts,
    "getTokenAccountBalance": rpc_get_token_account_balance,
    "requestAirdrop": rpc_request_airdrop,
    "simulateTransaction": rpc_simulate_transaction,
    "sendTransaction": rpc_send_transaction,
    "getSignatureStatuses": rpc_get_signature_statuses,
    "getTransaction": rpc_get_transaction,
    "getSignaturesForAddress": rpc_get_signatures_for_address,
}
"""The JSON-RPC methods the node answers; anything else gets -32601 Method not found."""


# --- HTTP --------------------------------------------------------------------------------------

class _RpcHandler(BaseHTTPRequestHandler):
    """JSON-RPC over HTTP POST, keep-alive (solana-py reuses its connections)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    node: SolanaNode
    max_body = 2 * 1024 * 1024

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body:
            self._send(413, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "request too large"}})
            return
        try:
            request = json.loads(self.rfile.read(length))
        except ValueError:
            self._send(200, _reply(None, error=RpcError(-32700, "Parse error")))
            return
        self._send(200, self.node.handle(request))

    def do_GET(self) -> None:
        self._send(405, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "use POST"}})

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass
