"""x402 payments: a real router pays a loopback fake upstream that answers HTTP 402 with an
x402 v1 or v2 challenge and checks the EIP-3009 signature itself (tests/fakes.py).

Covered: one paid retry (whole and streamed), the client's own payment header stripped,
GET /wallet (and its USDC balance over a loopback JSON-RPC fake), every refusal (over a
cap, wrong network, wrong token name or version, a foreign asset or host, a second 402)
answered 402 with a clear error and nothing spent, fresh nonces and a replayed or
tampered payment refused by the upstream, payments and refusals counted per route in
/usage, /metrics and the dashboard, caps that survive a restart and hold across two
routers on one Redis, and the wallet key kept out of logs and pages.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import signal
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import Router
from eth_account import Account
from fakes import FakeJsonRpc, FakePaidProvider

from xrouter_core.config import ConfigError, load_settings
from xrouter_core.payments.caps import LEDGER_FILE, usd, utc_day

WALLET_KEY = "0x" + "4c" * 32  # a test key: it must never show up in a log or a page
CHAT = "/v1/chat/completions"


def ask(router: Router, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": "x", "messages": [{"role": "user", "content": text}]}
    with router.client() as client:
        return client.post(CHAT, json=body, headers=headers or {})


def paid_env(fake: FakePaidProvider, data_dir: str, **extra: str) -> dict[str, str]:
    return {
        "FRONTIER_BASE_URL": fake.url + "/v1",
        "FRONTIER_MODEL": "paid-model",
        "FRONTIER_X402": fake.network,
        "CLASSIFIER_ENABLED": "false",
        "X402_MAX_PER_REQUEST_USD": "0.05",
        "X402_MAX_PER_DAY_USD": "1",
        "XROUTER_DATA_DIR": data_dir,
        "XROUTER_AUTO_ROUTES": "false",
        **extra,
    }


@pytest.fixture(scope="module", params=["mitmdump", "xrouter"])
def paid(request, tmp_path_factory):
    """One paying router (key from LLM_ROUTER_WALLET_KEY) over one fake paid upstream."""
    fake = FakePaidProvider()
    tmp = tmp_path_factory.mktemp(f"paid-{request.param}")
    env = paid_env(fake, str(tmp / "data"), LLM_ROUTER_WALLET_KEY=WALLET_KEY)
    router = Router(env, tmp, launcher=request.param)
    yield router, fake
    router.stop()
    fake.close()


@pytest.fixture
def fake(paid):
    router, fake = paid
    fake.requests.clear()
    fake.rejections.clear()
    fake.challenge_override, fake.always_402, fake.amount = {}, False, "10000"
    fake.offered_first, fake.version, fake.resource_override = [], 1, {}
    yield fake


def spent(router: Router) -> str:
    with router.client() as client:
        return client.get("/wallet").json()["today"]["spent_usd"]


def test_a_402_is_paid_once_with_a_signature_the_upstream_recovers(paid, fake):
    router, _ = paid
    before = spent(router)
    with router.client() as client:
        counted_before = client.get("/usage").json()["x402"]
    answer = ask(router, "pay for this", headers={"X-PAYMENT": "client-sent-payment"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Hello from paid!"
    first, second = fake.requests
    assert "x-payment" not in first.headers  # the client's own payment header never goes up
    assert second.headers["x-payment"] != "client-sent-payment"
    assert first.body == second.body  # the same request, retried
    assert fake.payers[-1] == Account.from_key(WALLET_KEY).address
    assert float(spent(router)) == pytest.approx(float(before) + 0.01)
    with router.client() as client:
        paid_usage = client.get("/usage").json()["x402"]
    assert paid_usage["payments"] == counted_before["payments"] + 1
    assert paid_usage["paidUsd"] == pytest.approx(counted_before["paidUsd"] + 0.01)
    logs = router.logs()
    assert "x402 paid route=frontier amount_usd=0.01" in logs and "settled=True" in logs


def test_a_streamed_request_is_paid_and_streams(paid, fake):
    router, _ = paid
    body = {"model": "x", "stream": True, "messages": [{"role": "user", "content": "stream it"}]}
    with router.client() as client, client.stream("POST", CHAT, json=body) as answer:
        assert answer.status_code == 200
        text = "".join(answer.iter_text())
    assert "Hello from paid" in text and "[DONE]" in text
    assert len(fake.requests) == 2 and "x-payment" in fake.requests[1].headers


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        ({"maxAmountRequired": "60000"}, "above X402_MAX_PER_REQUEST_USD (0.05 USD)"),
        ({"network": "base"}, "network 'base' is not this route's ('base-sepolia')"),
        ({"extra": {"name": "USD Coin", "version": "2"}}, "token domain 'USD Coin'"),
        ({"extra": {"name": "USDC", "version": "1"}}, "version '1' is not USDC's"),
        ({"asset": "0x" + "de" * 20}, "is not USDC on base-sepolia"),
        ({"scheme": "upto"}, "scheme 'upto' is not supported"),
        ({"resource": "https://elsewhere.example/pay"}, "host 'elsewhere.example'"),
    ],
    ids=["over-cap", "network", "token-name", "token-version", "asset", "scheme", "host"],
)
def test_a_challenge_it_must_not_pay_is_answered_402_unpaid(paid, fake, tamper, says):
    router, _ = paid
    before = spent(router)
    fake.challenge_override = tamper
    answer = ask(router, f"refuse {says}")
    assert answer.status_code == 402, answer.text
    error = answer.json()["error"]
    assert error["code"] == "x402_not_paid" and says in error["message"], error
    assert len(fake.requests) == 1  # not retried, nothing signed
    assert spent(router) == before


def test_an_entry_it_cannot_pay_is_skipped_for_one_it_can(paid, fake):
    router, _ = paid
    fake.offered_first = [{**fake.challenge()["accepts"][0], "network": "solana"}]
    answer = ask(router, "skip the first entry")
    assert answer.status_code == 200, answer.text
    assert json.loads(base64.b64decode(fake.requests[1].headers["x-payment"]))["network"] == (
        "base-sepolia"
    )


def test_an_anthropic_client_gets_the_refusal_in_anthropics_shape(paid, fake):
    router, _ = paid
    fake.challenge_override = {"network": "base"}
    body = {"model": "x", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    with router.client() as client:
        answer = client.post("/v1/messages", json=body)
    assert answer.status_code == 402
    doc = answer.json()
    assert doc["type"] == "error" and "is not this route's" in doc["error"]["message"]


def test_a_v2_challenge_in_its_header_is_paid_with_payment_signature(paid, fake):
    router, _ = paid
    fake.version = 2
    answer = ask(router, "pay the v2 way", headers={"Payment-Signature": "client-sent"})
    assert answer.status_code == 200, answer.text
    first, second = fake.requests
    assert "payment-signature" not in first.headers and "x-payment" not in second.headers
    payload = json.loads(base64.b64decode(second.headers["payment-signature"]))
    assert payload["x402Version"] == 2 and payload["accepted"]["network"] == "eip155:84532"
    assert fake.payers[-1] == Account.from_key(WALLET_KEY).address
    assert "header=payment-signature" in router.logs()


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        ({"network": "eip155:8453"}, "network 'eip155:8453' is not this route's ('eip155:84532')"),
        ({"amount": "60000"}, "above X402_MAX_PER_REQUEST_USD"),
        ({"extra": {"name": "Fake", "version": "2"}}, "token domain 'Fake'"),
        ({"extra": {"name": "USDC", "version": "3"}}, "version '3' is not USDC's"),
        ({"amount": "0.01"}, "amount '0.01' is not a positive whole number"),
        (
            {"resource": {"url": "https://elsewhere.example/v1/chat/completions"}},
            "the resource's host 'elsewhere.example' is not this route's",
        ),
    ],
    ids=["network", "over-cap", "token-name", "token-version", "amount", "host"],
)
def test_a_v2_challenge_it_must_not_pay_is_refused(paid, fake, tamper, says):
    router, _ = paid
    tamper = dict(tamper)  # the parameter is shared by both launchers' runs
    if "resource" in tamper:
        fake.resource_override = tamper.pop("resource")
    fake.version, fake.challenge_override = 2, tamper
    answer = ask(router, f"v2 refuse {says}")
    assert answer.status_code == 402 and says in answer.json()["error"]["message"]
    assert len(fake.requests) == 1


def test_a_second_402_is_not_paid_again(paid, fake):
    router, _ = paid
    before = spent(router)
    fake.always_402 = True
    answer = ask(router, "pay twice?")
    assert answer.status_code == 402
    assert "answered 402 again after a payment of 0.01 USD" in answer.json()["error"]["message"]
    assert len(fake.requests) == 2
    assert float(spent(router)) == pytest.approx(float(before) + 0.01)  # the one signed counts


def test_wallet_page_shows_the_address_and_caps_and_no_page_or_log_shows_the_key(paid, fake):
    router, _ = paid
    with router.client() as client:
        wallet = client.get("/wallet").json()
        pages = [client.get(p).text for p in ("/wallet", "/health", "/usage", "/dashboard")]
    assert wallet["address"] == Account.from_key(WALLET_KEY).address
    assert wallet["key_source"] == "env" and wallet["paying"] is True
    assert wallet["networks"][0]["network"] == "base-sepolia"
    assert wallet["caps"] == {"max_per_request_usd": "0.05", "max_per_day_usd": "1.00"}
    for text in [*pages, router.logs()]:
        assert WALLET_KEY[2:] not in text.lower()


def test_caps_and_the_generated_wallet_survive_a_restart(tmp_path, launcher):
    fake = FakePaidProvider()
    data = tmp_path / "data"
    env = paid_env(fake, str(data), X402_MAX_PER_REQUEST_USD="0.01", X402_MAX_PER_DAY_USD="0.025")
    try:
        (tmp_path / "one").mkdir()
        first = Router(env, tmp_path / "one", launcher=launcher)
        try:
            assert ask(first, "one").status_code == 200
            assert ask(first, "two").status_code == 200
            with first.client() as client:
                address = client.get("/wallet").json()["address"]
        finally:
            first.stop()
        key_file = data / "wallet" / "wallet.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
        assert json.loads((data / "wallet" / "spend.json").read_text())["spent"] == 20000
        (tmp_path / "two").mkdir()
        second = Router(env, tmp_path / "two", launcher=launcher)
        try:
            with second.client() as client:
                wallet = client.get("/wallet").json()
            assert wallet["address"] == address and wallet["key_source"] == "file"
            assert wallet["today"]["spent_usd"] == "0.02"
            answer = ask(second, "three")
            assert answer.status_code == 402
            message = answer.json()["error"]["message"]
            assert "above X402_MAX_PER_DAY_USD (0.025 USD)" in message, message
            assert len([r for r in fake.requests if "x-payment" in r.headers]) == 2
            assert key_file.read_text().strip()[2:] not in second.logs()
        finally:
            second.stop()
    finally:
        fake.close()


def test_a_malformed_wallet_key_stops_the_router_without_echoing_it(tmp_path):
    fake = FakePaidProvider()
    bad = "0x" + "zz" * 32
    env = paid_env(fake, str(tmp_path / "data"), LLM_ROUTER_WALLET_KEY=bad)
    router = Router(env, tmp_path, launcher="xrouter", wait=False)
    try:
        assert router.proc.wait(30) != 0
        logs = router.logs()
        assert "LLM_ROUTER_WALLET_KEY is not a private key" in logs and bad not in logs
    finally:
        router.stop()
        fake.close()


def config_problems(**env: str) -> list[str]:
    base = {"FRONTIER_BASE_URL": "http://127.0.0.1:9/v1", "CLASSIFIER_ENABLED": "false"}
    try:
        load_settings({**base, **env}, env_file=os.devnull, upstreams_file=os.devnull)
    except ConfigError as exc:
        return exc.problems
    return []


def test_payment_configuration_is_checked():
    assert config_problems(FRONTIER_X402="base") == [
        "FRONTIER_X402 pays upstreams: set both X402_MAX_PER_REQUEST_USD and"
        " X402_MAX_PER_DAY_USD (payment has no unlimited default)"
    ]
    assert "FRONTIER_X402 must be one of" in config_problems(FRONTIER_X402="polygon")[0]
    caps = {"X402_MAX_PER_REQUEST_USD": "0.1", "X402_MAX_PER_DAY_USD": "1"}
    assert config_problems(FRONTIER_X402="base", **caps) == []
    assert "above 0" in config_problems(X402_MAX_PER_DAY_USD="-1")[0]
    assert (
        "must not be above"
        in config_problems(X402_MAX_PER_REQUEST_USD="2", X402_MAX_PER_DAY_USD="1")[0]
    )
    assert config_problems(X402_RPC_URL="ftp://rpc.example") == [
        "X402_RPC_URL must be an http(s) URL, not 'ftp://rpc.example'"
    ]
    base = {"FRONTIER_BASE_URL": "http://127.0.0.1:9/v1", "CLASSIFIER_ENABLED": "false"}
    rpc = {"X402_RPC_URL": "https://rpc.example/k1", "X402_RPC_URL_BASE": "https://base.example/k2"}
    loaded = load_settings({**base, **rpc}, env_file=os.devnull, upstreams_file=os.devnull)
    assert loaded.payments.rpc_urls == {
        "base": "https://base.example/k2",
        "base-sepolia": "https://rpc.example/k1",
    }
    assert {"https://base.example/k2", "https://rpc.example/k1"} <= set(loaded.secrets)
    zero = "0x" + "00" * 32
    assert "not a private key" in config_problems(LLM_ROUTER_WALLET_KEY=zero)[0]
    assert zero not in " ".join(config_problems(LLM_ROUTER_WALLET_KEY=zero))


def signed_headers(fake: FakePaidProvider) -> list[str]:
    return [r.headers["x-payment"] for r in fake.requests if "x-payment" in r.headers]


def test_every_payment_has_a_fresh_nonce_and_the_upstream_refuses_a_replayed_one(paid, fake):
    router, _ = paid
    seen = set(fake.nonces)
    for i in range(5):
        assert ask(router, f"nonce {i}").status_code == 200
    payments = signed_headers(fake)
    nonces = {
        json.loads(base64.b64decode(p))["payload"]["authorization"]["nonce"] for p in payments
    }
    assert len(payments) == 5 and len(nonces) == 5 and not nonces & seen  # never reused
    assert fake.nonces >= nonces and not fake.rejections
    # The same payment sent again (as a replaying client or router would) is refused:
    body = fake.requests[-1].body
    with httpx.Client(base_url=fake.url, trust_env=False) as upstream:
        replay = upstream.post(CHAT, content=body, headers={"x-payment": payments[-1]})
    assert replay.status_code == 402 and fake.rejections == ["nonce replayed or not 32 bytes"]


def test_a_tampered_amount_breaks_the_signature_the_upstream_checks(paid, fake):
    """The amount is inside the signed EIP-712 message: raised after signing, the signer
    the upstream recovers is no longer the wallet, and the payment is refused."""
    router, _ = paid
    assert ask(router, "sign one").status_code == 200
    doc = json.loads(base64.b64decode(signed_headers(fake)[-1]))
    doc["payload"]["authorization"]["value"] = "20000"
    fake.amount = "20000"  # so only the signature can catch it
    tampered = base64.b64encode(json.dumps(doc).encode()).decode()
    with httpx.Client(base_url=fake.url, trust_env=False) as upstream:
        answer = upstream.post(CHAT, content=b"{}", headers={"x-payment": tampered})
    assert answer.status_code == 402 and fake.rejections == ["the signature is not the payer's"]


def test_usage_and_metrics_count_payments_and_refusals_per_route(paid, fake):
    router, _ = paid

    def x402() -> dict:
        with router.client() as client:
            return client.get("/usage").json()["x402"]

    before = x402()
    row = before["byRoute"].get("frontier", {"payments": 0, "refusedBy": {}, "settled": 0})
    assert ask(router, "paid one").status_code == 200
    fake.challenge_override = {"network": "base"}
    assert ask(router, "refused one").status_code == 402
    fake.challenge_override = {"maxAmountRequired": "60000"}
    assert ask(router, "refused two").status_code == 402
    after = x402()
    route = after["byRoute"]["frontier"]
    assert route["tier"] == "frontier"
    assert route["payments"] == row["payments"] + 1
    assert route["settled"] == row["settled"] + 1
    assert route["refusedBy"]["network"] == row["refusedBy"].get("network", 0) + 1
    assert route["refusedBy"]["request_cap"] == row["refusedBy"].get("request_cap", 0) + 1
    assert after["refused"] == before["refused"] + 2
    assert after["paidMicroUsd"] == before["paidMicroUsd"] + 10_000
    assert after["byTier"]["frontier"]["payments"] == after["payments"]
    with router.client() as client:
        metrics = client.get("/metrics").text
    assert (
        f'xrouter_x402_payments_total{{route="frontier",tier="frontier"}} {after["payments"]}'
        in (metrics)
    )
    assert (
        'xrouter_x402_refusals_total{route="frontier",tier="frontier",reason="request_cap"}'
        f" {route['refusedBy']['request_cap']}" in metrics
    )
    assert 'xrouter_x402_paid_usd_total{route="frontier",tier="frontier"} ' in metrics
    assert "x402 not paid route=frontier reason=network:" in router.logs()


def test_without_an_rpc_url_the_wallet_has_no_balance_and_says_why(paid, fake):
    router, _ = paid
    with router.client() as client:
        wallet = client.get("/wallet").json()
    assert wallet["balance"] is None
    assert wallet["balance_reason"].startswith("no RPC URL configured (X402_RPC_URL")
    assert wallet["networks"][0]["balance"] is None
    assert wallet["today"]["ledger"] == "file"


def test_the_wallet_shows_the_usdc_balance_read_over_json_rpc(tmp_path):
    """Base Sepolia's RPC is a loopback fake that decodes the balanceOf call; Base's RPC
    URL points where nothing listens: that network's balance is null with a reason, and
    the page still answers."""
    fake, rpc, dead = FakePaidProvider(), FakeJsonRpc(), FakePaidProvider()
    dead_url = dead.url
    dead.close()
    address = Account.from_key(WALLET_KEY).address
    sepolia_usdc = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
    rpc.balances[(sepolia_usdc.lower(), address.lower())] = 12_345_678  # 12.345678 USDC
    env = paid_env(
        fake,
        str(tmp_path / "data"),
        LLM_ROUTER_WALLET_KEY=WALLET_KEY,
        X402_RPC_URL_BASE_SEPOLIA=rpc.url + "/rpc-key-abcdef123",
        X402_RPC_URL_BASE=dead_url,
        CHEAP_BASE_URL=fake.url + "/v1",
        CHEAP_X402="base",
    )
    router = Router(env, tmp_path, launcher="xrouter")
    try:
        with router.client() as client:
            wallet = client.get("/wallet").json()
            again = client.get("/wallet").json()
        by_network = {n["network"]: n for n in wallet["networks"]}
        assert by_network["base-sepolia"]["balance"] == "12.345678"
        assert by_network["base"]["balance"] is None
        assert by_network["base"]["balance_reason"] == "the balance could not be read: ConnectError"
        assert (
            wallet["balance"] is None
            and wallet["balance_reason"]
            == (
                by_network["base"]["balance_reason"]  # the first network's (base)
            )
        )
        assert rpc.calls == [(sepolia_usdc.lower(), address.lower())]  # the second: cached
        assert again["networks"] == wallet["networks"]
        assert "rpc-key-abcdef123" not in json.dumps(wallet) + router.logs()
    finally:
        router.stop()
        fake.close()
        rpc.close()


def test_two_routers_on_one_redis_pay_exactly_the_day_cap_and_a_restart_keeps_it(tmp_path):
    """50 concurrent paid requests of 0.003 USD, 25 to each of two router processes that
    share one redis-server, against a 0.10 USD day cap: exactly 33 are paid (0.099), the
    other 17 are refused naming the day cap, never a 34th. A restarted router reads the
    same spend from Redis (the Redis key is the truth) and refuses the next payment."""
    from concurrent.futures import ThreadPoolExecutor

    import redis
    from helpers import RedisServer, wait_for

    server = RedisServer(tmp_path)
    fake = FakePaidProvider()
    fake.amount = "3000"
    routers: list[Router] = []
    try:
        env = paid_env(
            fake,
            "",
            LLM_ROUTER_WALLET_KEY=WALLET_KEY,
            X402_MAX_PER_REQUEST_USD="0.01",
            X402_MAX_PER_DAY_USD="0.10",
            REDIS_URL=f"redis://127.0.0.1:{server.port}/0",
        )
        for name, launcher in (("one", "xrouter"), ("two", "mitmdump")):
            (tmp_path / name).mkdir()
            env["XROUTER_DATA_DIR"] = str(tmp_path / name / "data")  # no shared file
            routers.append(Router(dict(env), tmp_path / name, launcher=launcher))

        def one(i: int) -> int:
            return ask(routers[i % 2], f"concurrent {i}").status_code

        with ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(one, range(50)))
        assert statuses.count(200) == 33 and statuses.count(402) == 17, statuses
        assert len(fake.payers) == 33 and not fake.rejections
        key = f"xrouter:{{x402}}:spend:{Account.from_key(WALLET_KEY).address.lower()}:"
        day = redis.Redis(port=server.port)
        # Settlements are recorded in the background, after the answer went back.
        stored = wait_for(
            lambda: (h := day.hgetall(key + utc_day())).get(b"settled") == b"99000" and h
        )
        assert stored[b"spent"] == b"99000"  # whole micro-dollars
        for router in routers:
            with router.client() as client:
                wallet = client.get("/wallet").json()
            assert wallet["today"]["spent_usd"] == "0.099" and wallet["today"]["ledger"] == "redis"
        refusals = [line for r in routers for line in r.logs().splitlines() if "not paid" in line]
        assert len(refusals) == 17
        assert all("reason=day_cap" in line and "X402_MAX_PER_DAY_USD" in line for line in refusals)
        assert not (tmp_path / "one" / "data" / "wallet" / "spend.json").exists()

        def shared_counts():
            # The counters are shared too: each router flushes its own to Redis a moment
            # after counting (later when a busy Redis timed out a flush), so poll for both.
            with routers[0].client() as client:
                x402 = client.get("/usage").json()["x402"]
            return (x402["payments"], x402["refusedBy"])

        assert wait_for(lambda: shared_counts() == (33, {"day_cap": 17}))

        routers[0].stop()
        (tmp_path / "three").mkdir()
        env["XROUTER_DATA_DIR"] = str(tmp_path / "one" / "data")
        routers[0] = Router(dict(env), tmp_path / "three", launcher="xrouter")
        with routers[0].client() as client:
            assert client.get("/wallet").json()["today"]["spent_usd"] == "0.099"
        answer = ask(routers[0], "after the restart")
        assert answer.status_code == 402
        assert "above X402_MAX_PER_DAY_USD (0.10 USD)" in answer.json()["error"]["message"]
        assert len(fake.payers) == 33
    finally:
        for router in routers:
            router.stop()
        fake.close()
        server.proc.kill()
        server.proc.wait(10)


def test_the_dashboard_shows_payments_per_route_in_headless_chromium(tmp_path):
    """Two paid requests and two refusals (wrong network, over the per-request cap): the
    dashboard's x402 panel, rendered by Chromium, shows them per route and in total."""
    import re

    from helpers import chromium

    fake = FakePaidProvider()
    key = "dash-x402-key-123"
    env = paid_env(
        fake, str(tmp_path / "data"), LLM_ROUTER_WALLET_KEY=WALLET_KEY, ROUTER_API_KEY=key
    )
    router = Router(env, tmp_path, launcher="mitmdump")
    try:
        headers = {"authorization": f"Bearer {key}"}
        assert ask(router, "pay one", headers).status_code == 200
        assert ask(router, "pay two", headers).status_code == 200
        fake.challenge_override = {"network": "base"}
        assert ask(router, "refuse one", headers).status_code == 402
        fake.challenge_override = {"maxAmountRequired": "60000"}
        assert ask(router, "refuse two", headers).status_code == 402
        dom = chromium(router.url + f"/dashboard#key={key}", tmp_path, "--dump-dom", budget_ms=4000)
        html = dom.stdout.decode()
        assert dom.returncode == 0, dom.stderr.decode()[-2000:]
        rendered = re.search(r'data-rendered-payments="([^"]*)"', html)
        assert rendered, html[-3000:]
        assert json.loads(rendered.group(1).replace("&quot;", '"')) == [2, 20_000, 2]
        panel = html.split('id="payments-panel"', 1)[1].split("</section>", 1)[0]
        assert not panel.startswith(" hidden")
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", panel)
        # route, tier, payments, paid, settled (both answers' settlement said success),
        # refused, and why
        frontier = ["frontier", "frontier", "2", "$0.02", "2", "2", "network 1, request_cap 1"]
        assert cells[:7] == frontier, cells
        assert cells[7:] == ["total", "", "2", "$0.02", "2", "2", "network 1, request_cap 1"]
        assert key not in html
    finally:
        router.stop()
        fake.close()


@pytest.mark.parametrize("launcher", ["mitmdump"])  # the page does not depend on the form
def test_the_dashboard_hides_the_payments_panel_when_nothing_pays(start_router, tmp_path):
    from helpers import chromium

    router = start_router({"XROUTER_DATA_DIR": str(tmp_path / "d")})
    dom = chromium(router.url + "/dashboard", tmp_path, "--dump-dom", budget_ms=3000)
    html = dom.stdout.decode()
    assert dom.returncode == 0, dom.stderr.decode()[-2000:]
    assert 'data-rendered-payments="[0,0,0]"' in html, html[-3000:]
    assert 'id="payments-panel" hidden' in html


@pytest.mark.parametrize("ledger", ["file", "redis"])
def test_the_ledger_a_reload_or_an_unload_replaces_keeps_every_spend_and_closes(tmp_path, ledger):
    """A payment between each reload of the settings and each unload of the addon (its
    script reloaded): the day's spend and its settled part are exact in the ledger
    across them all, and a replaced Redis ledger closes its client (CLOSE_GRACE_S after,
    once its last commands are done), so the Redis server's connections do not grow."""
    from helpers import CONTROL, ENTRY, RedisServer, router_connections, wait_for

    from xrouter_core.accounting.redis_topology import CLOSE_GRACE_S

    server = RedisServer(tmp_path) if ledger == "redis" else None
    fake = FakePaidProvider()  # 0.01 USD a request
    extra = {"REDIS_URL": f"redis://127.0.0.1:{server.port}/0"} if server else {}
    extra["USAGE_FLUSH_MS"] = "10"  # the counters' client connects at once
    envs = [tmp_path / "a.env", tmp_path / "b.env"]
    for index, env_file in enumerate(envs):
        values = paid_env(fake, str(tmp_path / "data"), LLM_ROUTER_WALLET_KEY=WALLET_KEY, **extra)
        values["X402_MAX_PER_DAY_USD"] = f"{1 + index}"  # a change a reload takes
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    control = tmp_path / "control.py"
    control.write_text(CONTROL)
    router = Router({}, tmp_path, args=["-s", str(control), "--set", f"xrouter_env_file={envs[0]}"])

    def run(option: str, *values: str) -> None:
        with router.client() as client:
            reply = client.get("/control/set", params={"option": option, "value": list(values)})
        assert reply.status_code == 200 and reply.json()["error"] is None, reply.text

    def wallet() -> dict:
        with router.client() as client:
            return client.get("/wallet").json()["today"]

    try:
        connections = []
        for step in range(6):
            answer = ask(router, f"paid before change {step}")
            assert answer.status_code == 200, answer.text
            paid = usd((step + 1) * 10_000)
            # Settlements are recorded in the background, after the answer went back.
            today = wait_for(lambda paid=paid: (t := wallet())["settled_usd"] == paid and t)
            assert today["spent_usd"] == paid and today["ledger"] == ledger
            if server is not None:
                time.sleep(0.2)  # a flush or two: every store of the configuration in use
                connections.append(router_connections(server.port))
            if step % 2:
                copy = tmp_path / f"xrouter_entry_{step}.py"
                copy.write_text(ENTRY)
                run("scripts", str(copy), str(control))  # a new instance of the addon
            else:
                run("xrouter_env_file", str(envs[(step // 2 + 1) % 2]))
        answer = ask(router, "paid after the last change")
        assert answer.status_code == 200, answer.text
        assert wait_for(lambda: wallet()["settled_usd"] == "0.07")
        if server is not None:
            # A replaced ledger's client closes CLOSE_GRACE_S after the change.
            one_configuration = connections[0]
            until = time.monotonic() + CLOSE_GRACE_S + 10
            while (now := router_connections(server.port)) > one_configuration:
                if time.monotonic() > until:
                    break
                time.sleep(0.5)
            assert now <= one_configuration, (now, connections)
        assert "Traceback" not in router.logs(), router.logs()
    finally:
        router.stop()
        fake.close()
        if server is not None:
            server.kill()


def executor_threads() -> int:
    """How many threads asyncio's default executor runs, the router's ledger calls
    included: ThreadPoolExecutor's documented default."""
    cpus = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    return min(32, cpus + 4)


def test_settlements_still_on_their_way_to_a_busy_ledger_at_shutdown_reach_it(tmp_path, launcher):
    """More paid answers settle at once than the router has threads for its ledger
    calls, while the ledger is busy (another process holds its lock, as a router beside
    it does while it writes): the settlements queue. SIGTERM comes right after the
    answers, and the lock is let go once the router says it waits for them. Every
    settlement is in the ledger when it has exited: the router waits for the ones on
    their way (at most SETTLE_GRACE_S) before it closes the ledger. It used to cancel
    them with its other background work at once, and the ones that had not reached a
    thread yet were never recorded (6 of 8 here)."""
    from fakes import Reply, openai_completion
    from helpers import wait_for

    fake = FakePaidProvider()  # 0.01 USD a request
    data = tmp_path / "data"
    env = paid_env(fake, str(data), LLM_ROUTER_WALLET_KEY=WALLET_KEY)
    router = Router(env, tmp_path, launcher=launcher)
    count = executor_threads() + 2
    all_paid = threading.Barrier(count + 1)  # every paid request at the upstream, and us
    answer_now = threading.Event()

    def paid_answer(request):
        all_paid.wait(30)  # so every payment is reserved before the ledger gets busy
        answer_now.wait(30)
        return Reply(body=openai_completion("Paid, and settled."))

    fake.override = paid_answer
    ledger = data / LEDGER_FILE
    waiting = f"x402: waiting for {count} settlement(s) to reach the ledger"
    try:
        with ThreadPoolExecutor(count) as clients:
            answers = [clients.submit(ask, router, f"paid {i}") for i in range(count)]
            all_paid.wait(30)
            with open(ledger.with_suffix(".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # the ledger is busy from here
                answer_now.set()
                assert all(a.result().status_code == 200 for a in answers)
                router.proc.send_signal(signal.SIGTERM)
                # Read without a request of ours: the router is shutting down.
                wait_for(lambda: waiting in router.log_path.read_text(errors="replace"))
        assert router.proc.wait(30) == 0, router.logs()
        doc = json.loads(ledger.read_text())
        assert (doc["spent"], doc["settled"]) == (count * 10_000, count * 10_000), doc
        logs = router.logs()
        assert "not recorded" not in logs and "Traceback" not in logs, logs
    finally:
        router.stop()
        fake.close()


def test_a_settlement_on_its_way_when_the_addon_is_unloaded_reaches_the_ledger(tmp_path):
    """The router's script is reloaded in the very loop pass that settled a paid answer
    (CONTROL's x-control-scripts): the unloaded instance lets the settlement it started
    reach the ledger before it closes it, instead of cancelling it with its other
    background work before it had even run."""
    from helpers import CONTROL, ENTRY, wait_for

    fake = FakePaidProvider()  # 0.01 USD a request
    data = tmp_path / "data"
    env_file = tmp_path / "paid.env"
    values = paid_env(fake, str(data), LLM_ROUTER_WALLET_KEY=WALLET_KEY)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    control = tmp_path / "control.py"
    control.write_text(CONTROL)
    copy = tmp_path / "xrouter_entry.py"
    copy.write_text(ENTRY)
    router = Router(
        {}, tmp_path, args=["-s", str(control), "--set", f"xrouter_env_file={env_file}"]
    )
    try:
        scripts = json.dumps([str(copy), str(control)])
        answer = ask(router, "paid, then unloaded", headers={"x-control-scripts": scripts})
        assert answer.status_code == 200, answer.text

        def today() -> dict:
            with router.client() as client:
                return client.get("/wallet").json()["today"]

        wait_for(lambda: today()["spent_usd"] == "0.01")  # the new instance answers
        assert wait_for(lambda: today()["settled_usd"] == "0.01")
        assert "Traceback" not in router.logs(), router.logs()
    finally:
        router.stop()
        fake.close()
