"""The views as they were before the fold (tests/support/views_before_fold.sql), as an oracle: the views
over the folded tables must give the same rows, row for row."""
from __future__ import annotations

from pathlib import Path

from receipts.storage import db

ORACLE_SQL = (Path(__file__).parent / "views_before_fold.sql").read_text()
VIEWS = ("calls", "challenges", "payments", "settlements", "checks", "sessions", "receipts")
NEW_ONLY = {"challenges": ["item"],  # columns the fold added, and cost (issue 12)
            "calls": ["cost", "cost_currency", "price_table", "rpc_method", "mcp_tool", "rpc_id", "a2a_task",
                      "sign_in_address", "sign_in_chain", "sign_in_signer", "sign_in_error", "sign_in_expires",
                      "ohttp", "ohttp_tee_id"],
            "payments": ["memo", "token_account", "recent_blockhash", "payee_token_account",  # (Solana payments', issue 14)
                         "channel_id", "voucher_amount", "deposit_amount", "refund_amount", "payment_tx"],  # (payment channels')
            "settlements": ["seller_receipt",  # (the offer-receipt extension, issue 14) and payment channels'
                            "channel_id", "channel_tx", "channel_amount", "charged_cumulative", "channel_balance",
                            "channel_claimed"],
            "receipts": ["amount_decimal", "proof_status_at", "settlement_check", "settlement_checked_at",
                         "settlement_txs", "max_settled_amount", "payment_amount", "deadline", "prompt_tokens",
                         "completion_tokens", "latency_ms", "cost", "cost_currency", "cost_source", "price_table",
                         "seller_receipt", "channel_id", "voucher_amount", "charged_cumulative", "deposit_amount",
                         "channel_tx", "channel_tx_amount", "mcp_tool", "a2a_task", "sign_in", "sign_in_address",
                         "sign_in_error", "access_by", "ohttp_tee_id", "relay_receipt"]}


def rows(con, view: str, exclude=()) -> list[tuple]:
    cols = [c for (c,) in con.execute(f"SELECT column_name FROM (DESCRIBE {view})").fetchall() if c not in exclude]
    got = con.execute(f"SELECT {', '.join(repr_col(c) for c in cols)} FROM {view}").fetchall()
    return sorted(got, key=repr)


def repr_col(name: str) -> str:
    if name == "ids":  # a set of ids: its order is not defined
        return "list_sort(ids)::VARCHAR"
    return f'"{name}"::VARCHAR'  # JSON, lists and structs compare as text, as the user sees them


def differences(data_dir) -> dict[str, tuple[int, int, list]]:
    """view -> (rows before, rows now, a few rows that differ), for every view that differs."""
    out = {}
    with db.connect(data_dir, views=False) as old:
        old.execute(ORACLE_SQL)
        with db.connect(data_dir) as new:
            for view in VIEWS:
                a = rows(old, view)
                b = rows(new, view, NEW_ONLY.get(view, ()))
                if a != b:
                    out[view] = (len(a), len(b), [r for r in a if r not in b][:2] + [r for r in b if r not in a][:2])
    return out


def assert_same_as_before(data_dir) -> None:
    diff = differences(data_dir)
    assert not diff, diff
