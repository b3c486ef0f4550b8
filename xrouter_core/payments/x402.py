"""The x402 client, protocol versions 1 and 2, scheme `exact` on Base: USDC paid with an
EIP-3009 `transferWithAuthorization` signed as EIP-712 typed data.

A 402 from a paying route carries the requirements in its JSON body
(v1: `{"x402Version": 1, "accepts": [...]}`) or, base64-encoded, in its PAYMENT-REQUIRED
header (v2: CAIP-2 network ids such as `eip155:8453`, `amount` for the amount). `choose`
picks the one entry this router may pay or says why none fits; `sign` builds the payment
header (v1 `X-PAYMENT`, v2 `PAYMENT-SIGNATURE`: base64 of the payment payload's JSON).
Signing is eth-account's; nothing here is hand-written cryptography.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

PAYMENT_HEADER = "x-payment"
SETTLEMENT_HEADER = "x-payment-response"
# x402 v2: the challenge, the payment and the settlement, each base64 JSON in a header.
REQUIRED_HEADER_V2 = "payment-required"
PAYMENT_HEADER_V2 = "payment-signature"
SETTLEMENT_HEADER_V2 = "payment-response"
# Payment headers a client may send; the router is the payer, so they never go upstream.
CLIENT_PAYMENT_HEADERS = ("x-payment", "payment-signature")
X402_VERSION = 1
SCHEME = "exact"
# A signed authorization is valid for at most this long, whatever the challenge allows.
MAX_VALIDITY_S = 300
# validAfter is set this far back, for a facilitator whose clock is a little behind.
CLOCK_SKEW_S = 30


@dataclass(frozen=True)
class Token:
    """USDC on one network: the contract and its EIP-712 domain."""

    network: str
    caip2: str  # the v2 network id
    chain_id: int
    address: str
    name: str
    version: str


# Circle's USDC contracts and their EIP-712 domain (name, version) as deployed.
USDC = {
    "base": Token(
        "base", "eip155:8453", 8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", "2"
    ),
    "base-sepolia": Token(
        "base-sepolia",
        "eip155:84532",
        84532,
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "USDC",
        "2",
    ),
}

TRANSFER_WITH_AUTHORIZATION = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
EIP712_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


class PaymentRefused(Exception):
    """A 402 this router will not pay; the message says why (shown to the client), and
    `reason` names the check that failed (counted per route in /usage and /metrics)."""

    def __init__(self, message: str, reason: str = "challenge") -> None:
        super().__init__(message)
        self.reason = reason


# What a refusal is counted as: each check of a challenge, and the router's own reasons.
REFUSAL_REASONS = (
    "no_challenge",  # no readable x402 challenge, or a version this router does not speak
    "scheme",
    "network",
    "asset",
    "token",  # the token's EIP-712 name or version
    "amount",
    "pay_to",
    "host",  # the challenge names another host than the route's
    "timeout",
    "request_cap",
    "day_cap",
    "ledger",  # the spend ledger cannot be read (the file) or reached (Redis)
    "second_402",
    "not_set_up",
    "signing",
)


@dataclass(frozen=True)
class Requirement:
    """One accepted x402 payment requirement, checked."""

    token: Token
    amount: int  # USDC atomic units (micro-dollars)
    pay_to: str
    timeout_s: int
    version: int = X402_VERSION
    # v2: the entry as offered (sent back as `accepted`) and the challenge's resource.
    entry: dict[str, Any] | None = None
    resource: Any = None

    @property
    def header(self) -> str:
        """The request header the payment goes in."""
        return PAYMENT_HEADER if self.version == 1 else PAYMENT_HEADER_V2


def _is_address(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 42:
        return False
    return all(c in "0123456789abcdefABCDEF" for c in value[2:])


def _problem(
    entry: Any, network: str, route_host: str, version: int
) -> tuple[str, str] | Requirement:
    """Why one `accepts` entry cannot be paid (reason, message), or the checked requirement."""
    if not isinstance(entry, dict):
        return "no_challenge", "an entry is not an object"
    if entry.get("scheme") != SCHEME:
        return "scheme", f"scheme {entry.get('scheme')!r} is not supported (only 'exact')"
    token = USDC[network]
    wanted = network if version == 1 else token.caip2
    if entry.get("network") != wanted:
        return "network", f"network {entry.get('network')!r} is not this route's ({wanted!r})"
    asset = entry.get("asset")
    if not isinstance(asset, str) or asset.lower() != token.address.lower():
        return "asset", f"asset {asset!r} is not USDC on {network} ({token.address})"
    extra = entry.get("extra") if isinstance(entry.get("extra"), dict) else {}
    if extra.get("name") != token.name or extra.get("version") != token.version:
        return "token", (
            f"token domain {extra.get('name')!r} version {extra.get('version')!r} is not"
            f" USDC's on {network} ({token.name!r} version {token.version!r})"
        )
    amount_field = "maxAmountRequired" if version == 1 else "amount"
    raw = entry.get(amount_field)
    if not isinstance(raw, str) or not raw.isdigit() or int(raw) <= 0:
        return "amount", f"{amount_field} {raw!r} is not a positive whole number of atomic units"
    if not _is_address(entry.get("payTo")):
        return "pay_to", "payTo is not an address"
    resource = entry.get("resource")
    if isinstance(resource, str) and "://" in resource:
        host = urlsplit(resource).hostname or ""
        if host.lower() != route_host.lower():
            return "host", f"the resource's host {host!r} is not this route's ({route_host!r})"
    timeout = entry.get("maxTimeoutSeconds", MAX_VALIDITY_S)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
        return "timeout", f"maxTimeoutSeconds {timeout!r} is not a positive whole number"
    return Requirement(
        token, int(raw), entry["payTo"], min(timeout, MAX_VALIDITY_S), version, entry
    )


def _challenge(body: bytes, required_header: str) -> dict[str, Any]:
    """The challenge document: v2's header when there is one, else v1's JSON body."""
    if required_header:
        try:
            doc = json.loads(base64.b64decode(required_header, validate=True))
        except (ValueError, binascii.Error) as exc:
            raise PaymentRefused(
                "the 402's PAYMENT-REQUIRED header is not base64 JSON", "no_challenge"
            ) from exc
        expected = 2
    else:
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise PaymentRefused(
                "the 402 carries no x402 challenge (its body is not JSON)", "no_challenge"
            ) from exc
        expected = 1
    if not isinstance(doc, dict) or not isinstance(doc.get("accepts"), list):
        raise PaymentRefused(
            "the 402 carries no x402 challenge (no 'accepts' list)", "no_challenge"
        )
    if doc.get("x402Version") != expected:
        where = "PAYMENT-REQUIRED header" if required_header else "body"
        raise PaymentRefused(
            f"x402Version {doc.get('x402Version')!r} in the 402's {where} is not supported"
            f" (the {where} carries version {expected})",
            "no_challenge",
        )
    return doc


def choose(body: bytes, network: str, route_host: str, required_header: str = "") -> Requirement:
    """The first `accepts` entry of a v1 or v2 challenge this route may pay;
    PaymentRefused (with every entry's reason) when there is none."""
    doc = _challenge(body, required_header)
    version = doc["x402Version"]
    resource = doc.get("resource")
    if version == 2 and isinstance(resource, dict) and isinstance(resource.get("url"), str):
        host = urlsplit(resource["url"]).hostname or ""
        if host.lower() != route_host.lower():
            raise PaymentRefused(
                f"the resource's host {host!r} is not this route's ({route_host!r})", "host"
            )
    problems: list[tuple[str, str]] = []
    for entry in doc["accepts"]:
        checked = _problem(entry, network, route_host, version)
        if isinstance(checked, Requirement):
            return replace(checked, resource=resource) if version == 2 else checked
        problems.append(checked)
    # Counted under the last entry's reason: the one offered for this route's network
    # usually comes last (others first, to be skipped).
    raise PaymentRefused(
        "no payable requirement: "
        + ("; ".join(message for _, message in problems) or "'accepts' is empty"),
        problems[-1][0] if problems else "no_challenge",
    )


def typed_data(token: Token, authorization: dict[str, Any]) -> dict[str, Any]:
    """The EIP-712 message a `transferWithAuthorization` is signed as."""
    return {
        "types": {
            "EIP712Domain": EIP712_DOMAIN,
            "TransferWithAuthorization": TRANSFER_WITH_AUTHORIZATION,
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": token.name,
            "version": token.version,
            "chainId": token.chain_id,
            "verifyingContract": token.address,
        },
        "message": authorization,
    }


def sign(account: LocalAccount, requirement: Requirement, now: float | None = None) -> str:
    """The payment header's value (`requirement.header`): a fresh random nonce, valid
    for at most 300 s."""
    now_s = int(time.time() if now is None else now)
    nonce = secrets.token_bytes(32)
    valid_after = now_s - CLOCK_SKEW_S
    valid_before = now_s + min(requirement.timeout_s, MAX_VALIDITY_S - CLOCK_SKEW_S)
    message = {
        "from": account.address,
        "to": requirement.pay_to,
        "value": requirement.amount,
        "validAfter": valid_after,
        "validBefore": valid_before,
        "nonce": nonce,
    }
    signed = account.sign_typed_data(full_message=typed_data(requirement.token, message))
    exact = {
        "signature": "0x" + signed.signature.hex().removeprefix("0x"),
        "authorization": {
            "from": account.address,
            "to": requirement.pay_to,
            "value": str(requirement.amount),
            "validAfter": str(valid_after),
            "validBefore": str(valid_before),
            "nonce": "0x" + nonce.hex(),
        },
    }
    payload: dict[str, Any]
    if requirement.version == 1:
        payload = {
            "x402Version": 1,
            "scheme": SCHEME,
            "network": requirement.token.network,
            "payload": exact,
        }
    else:
        payload = {"x402Version": 2, "accepted": requirement.entry, "payload": exact}
        if requirement.resource is not None:
            payload["resource"] = requirement.resource
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def settlement(header: str) -> dict[str, Any]:
    """The X-PAYMENT-RESPONSE (v1) or PAYMENT-RESPONSE (v2) header (base64 JSON: success,
    transaction, network, payer), or {} when it is missing or not readable."""
    if not header:
        return {}
    try:
        doc = json.loads(base64.b64decode(header, validate=True))
    except (ValueError, binascii.Error):
        return {}
    return doc if isinstance(doc, dict) else {}
