"""What the verifier needs to check an OpenGradient TEE proof, taken at capture time (pure, never raises).

A TEE signs keccak256(request_hash ‖ output_hash ‖ timestamp). To check the two hashes later without
keeping bodies, the recorder keeps:
- the keccak256 of each known canonical form of the request (the gateway hashes
  `json.dumps(canonical, sort_keys=True)`, and which fields are canonical differs between gateway
  and SDK versions: the verifier records which form matched);
- the keccak256 of the answer it saw (the message text, or the tool calls as the gateway hashes them).
Hashes are not secrets: nothing here can be turned back into a prompt.
"""

from __future__ import annotations

import json
from typing import Any

from eth_hash.auto import keccak


def keccak_hex(text: str) -> str:
    return "0x" + keccak(text.encode("utf-8", "surrogatepass")).hex()


def _user_content(content):
    """Multimodal user content as the gateway hashes it: text kept, attachments reduced to type/filename."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return str(content)
    out: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            out.append({"type": "text", "text": str(part)})
        elif part.get("type") == "text":
            out.append({"type": "text", "text": part.get("text", "") or ""})
        else:
            entry = {"type": part.get("type")}
            file_obj = part.get("file")
            name = (file_obj.get("filename") if isinstance(file_obj, dict) else None) or part.get("filename")
            if name:
                entry["filename"] = name
            out.append(entry)
    return out


def _message(msg: dict) -> dict | None:
    role = msg.get("role")
    if role in ("system", "developer"):
        return {"role": "system", "content": msg.get("content")}
    if role == "user":
        return {"role": "user", "content": _user_content(msg.get("content"))}
    if role == "assistant":
        out = {"role": "assistant", "content": msg.get("content") or ""}
        calls = msg.get("tool_calls")
        if isinstance(calls, list) and calls:
            out["tool_calls"] = [
                {
                    "id": c.get("id", ""),
                    "type": c.get("type", "function"),
                    "function": {
                        "name": (c.get("function") or {}).get("name", ""),
                        "arguments": (c.get("function") or {}).get("arguments", ""),
                    },
                }
                for c in calls
                if isinstance(c, dict)
            ]
        return out
    if role == "tool":
        return {"role": "tool", "content": msg.get("content"), "tool_call_id": msg.get("tool_call_id")}
    if role == "function":
        return {"role": "function", "content": msg.get("content"), "name": msg.get("name")}
    return None


def gateway_form(doc: dict) -> dict | None:
    """The canonical request of the current gateway (since March 2026; SDK 1.1.x): a fixed subset of
    fields, messages reshaped, temperature always present as a float."""
    messages = doc.get("messages")
    if not isinstance(doc.get("model"), str) or not isinstance(messages, list) or not messages:
        return None
    shaped = [_message(m) if isinstance(m, dict) else None for m in messages]
    if any(m is None for m in shaped):
        return None
    temperature = doc.get("temperature")
    try:
        temperature = float(temperature) if temperature is not None else 0.0
    except (TypeError, ValueError):
        return None
    out = {"model": doc["model"], "messages": shaped, "temperature": temperature}
    if doc.get("max_tokens") is not None:
        out["max_tokens"] = doc["max_tokens"]
    for name in ("stop", "tools", "response_format"):
        if doc.get(name):
            out[name] = doc[name]
    if doc.get("web_search"):
        out["web_search"] = True
    return out


def pydantic_form(doc: dict) -> dict | None:
    """The February 2026 gateway's canonical request (its request model dumped whole: every field
    present, nulls included, tool_choice defaulting to "auto")."""
    messages = doc.get("messages")
    if not isinstance(doc.get("model"), str) or not isinstance(messages, list) or not messages:
        return None
    if not all(isinstance(m, dict) for m in messages):
        return None
    tools = doc.get("tools")
    if tools and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        return None
    try:
        temperature = float(doc["temperature"]) if doc.get("temperature") is not None else 0.0
        max_tokens = int(doc["max_tokens"]) if doc.get("max_tokens") is not None else None
    except (TypeError, ValueError):
        return None
    return {
        "model": doc["model"],
        "messages": [
            {
                "role": m.get("role"),
                "content": m.get("content"),
                "tool_calls": m.get("tool_calls"),
                "tool_call_id": m.get("tool_call_id"),
                "name": m.get("name"),
            }
            for m in messages
        ],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "stop": doc.get("stop"),
        "tools": [{"type": t.get("type", "function"), "function": t.get("function")} for t in tools] if tools else None,
        "tool_choice": doc.get("tool_choice", "auto"),
    }


# Known forms, newest first: (name, builder). The verifier records which one matched.
FORMS = {"gateway-2026-03": gateway_form, "gateway-2026-02": pydantic_form}


def request_hashes(doc: object) -> dict[str, str] | None:
    """keccak256 of each known canonical form of a chat request: {form: 0x-hex}."""
    if not isinstance(doc, dict):
        return None
    out = {}
    for name, form in FORMS.items():
        try:
            canonical = form(doc)
            if canonical is not None:
                out[name] = keccak_hex(json.dumps(canonical, sort_keys=True))
        except (TypeError, ValueError, RecursionError):
            continue
    return out or None


def output_hash(doc: object) -> str | None:
    """keccak256 of what the gateway signs as the output of a (non-streamed) chat completion."""
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        return None
    if choice.get("finish_reason") == "tool_calls" and isinstance(message.get("tool_calls"), list):
        return keccak_hex(json.dumps(message["tool_calls"], sort_keys=True))
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return keccak_hex(content if isinstance(content, str) else "")
