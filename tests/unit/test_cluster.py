"""The cluster view's pure parts: merging the workers' answers, the members of an assignment, and the
address a worker advertises to the others."""

from __future__ import annotations

from typing import Any

import pytest

from agents.cluster import Answer, Member, members_of, merge
from pipeline.config.settings import WebConfig, load_config
from pipeline.errors import ConfigError

ME = Member("http://a:6066", (0, 1), is_self=True)
B = Member("http://b:6066", (2,))
C = Member("http://c:6066", (3,))


def entry(key: str, count: int) -> dict[str, Any]:
    return {"key": key, "kind": "errors", "total": {"count": count}}


def test_every_answer_counts_once_and_a_whole_cluster_is_not_partial() -> None:
    answers = [
        Answer(ME, (0, 1), [entry('["errors","a"]', 1)], elapsed_ms=0.5),
        Answer(B, (2,), [entry('["errors","c"]', 3)], elapsed_ms=12.0),
        Answer(C, (3,), [entry('["errors","b"]', 2)], elapsed_ms=9.0),
    ]
    whole = merge(1_000, answers, 4)
    assert [s["key"] for s in whole.series] == ['["errors","a"]', '["errors","b"]', '["errors","c"]']
    assert whole.missing_partitions == []
    assert not whole.partial
    assert [w["status"] for w in whole.workers] == ["ok", "ok", "ok"]
    assert whole.workers[0] == {
        "url": "http://a:6066",
        "partitions": [0, 1],
        "self": True,
        "status": "ok",
        "elapsed_ms": 0.5,
        "served": [0, 1],
    }
    body = whole.to_dict()
    assert body["partitions"] == [0, 1, 2, 3]
    assert body["partial"] is False
    assert body["scope"] == "cluster"


def test_a_member_that_did_not_answer_is_missing_with_its_partitions_never_left_out_silently() -> None:
    answers = [
        Answer(ME, (0, 1), [entry('["errors","a"]', 1)]),
        Answer(B, error="no answer within 1 s", elapsed_ms=1000.2),
        Answer(C, (3,), [entry('["errors","b"]', 2)]),
    ]
    whole = merge(1_000, answers, 4)
    assert whole.partial
    assert whole.missing_partitions == [2]
    missing = whole.workers[1]
    assert missing["status"] == "missing"
    assert missing["error"] == "no answer within 1 s"
    assert missing["partitions"] == [2]
    assert "served" not in missing
    assert [s["key"] for s in whole.series] == ['["errors","a"]', '["errors","b"]']
    assert whole.to_dict()["partitions"] == [0, 1, 3]


def test_partitions_nobody_serves_are_missing_and_a_member_serving_none_of_its_own_is_missing() -> None:
    # B answered but reads none of its partitions yet (recovering); partition 3 has no member at all.
    answers = [Answer(ME, (0, 1), []), Answer(B, (), [])]
    whole = merge(1_000, answers, 4)
    assert whole.missing_partitions == [2, 3]
    assert whole.workers[1]["status"] == "missing"
    assert "recovering" in whole.workers[1]["error"]
    # During a rebalance two members may both hold a series for a moment: it is taken once, the first.
    twice = merge(1_000, [Answer(ME, (0, 1), [entry("k", 1)]), Answer(B, (1, 2), [entry("k", 9)])], 3)
    assert twice.series == [entry("k", 1)]
    assert twice.missing_partitions == []


def test_members_come_from_faust_s_changelog_distribution_this_worker_first() -> None:
    topic = "app-cells-changelog"
    distribution = {
        "http://c:6066": {topic: [3, 1]},
        "http://a:6066": {topic: [0], "app-flushlog-changelog": [0]},
        "http://b:6066": {},
    }
    members = members_of(distribution, topic, "http://b:6066")
    assert members == [
        Member("http://b:6066", (), True),
        Member("http://a:6066", (0,)),
        Member("http://c:6066", (1, 3)),
    ]
    assert members_of({}, topic, "http://a:6066") == []


def test_the_advertised_address_defaults_to_one_the_others_can_reach() -> None:
    def host() -> str:
        return "worker-7"

    assert WebConfig().advertised(host) == "http://127.0.0.1:6066"
    assert WebConfig(host="10.1.2.3", port=7000).advertised(host) == "http://10.1.2.3:7000"
    # Bound to every address (containers): the machine's name, never 0.0.0.0.
    assert WebConfig(host="0.0.0.0").advertised(host) == "http://worker-7:6066"
    assert WebConfig(host="::").advertised(host) == "http://worker-7:6066"
    assert WebConfig(host="::1", port=80).advertised(host) == "http://[::1]:80"
    explicit = load_config({"PULSE_WEB_HOST": "0.0.0.0", "PULSE_WEB_ADVERTISED_URL": "http://worker-1:6066/"})
    assert explicit.web.advertised(host) == "http://worker-1:6066"
    assert load_config({}).web.cluster_timeout == 1.0
    assert load_config({"PULSE_CLUSTER_TIMEOUT": "250ms"}).web.cluster_timeout == 0.25


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("worker-1:6066", "use http://HOST:PORT"),
        ("http://worker-1:6066/api", "no path"),
        ("http://worker-1:port", "use http://HOST:PORT"),
        ("http://0.0.0.0:6066", "names no host"),
    ],
)
def test_a_wrong_advertised_url_is_refused_naming_the_variable(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"PULSE_WEB_ADVERTISED_URL": value})
    message = str(caught.value)
    assert "PULSE_WEB_ADVERTISED_URL (config key web.advertised_url)" in message
    assert says in message


def test_the_cluster_timeout_is_bounded() -> None:
    with pytest.raises(ConfigError, match=r"web.cluster_timeout must be more than 0"):
        load_config({"PULSE_CLUSTER_TIMEOUT": "0"})


def test_the_deploy_files_give_each_worker_an_address_the_others_reach() -> None:
    from tests.unit.test_deploy_files import env_of, worker_container, workers

    advertised = {}
    for name, service in workers().items():
        env = env_of(service)
        assert env["PULSE_WEB_HOST"] == "0.0.0.0"
        # The compose service name resolves inside the compose network; the port is the one it binds.
        assert env["PULSE_WEB_ADVERTISED_URL"] == f"http://{name}:{env['PULSE_WEB_PORT']}"
        advertised[name] = load_config(env).web.advertised()
    assert len(set(advertised.values())) == len(advertised), "two workers advertise one URL"
    env = [item["name"] for item in worker_container()["env"]]
    items = {item["name"]: item for item in worker_container()["env"]}
    assert items["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # Kubernetes expands $(POD_IP) only when POD_IP is defined before the variable that uses it.
    assert items["PULSE_WEB_ADVERTISED_URL"]["value"] == "http://$(POD_IP):6066"
    assert env.index("POD_IP") < env.index("PULSE_WEB_ADVERTISED_URL")
    assert load_config({"PULSE_WEB_ADVERTISED_URL": "http://10.4.0.12:6066"}).web.advertised() == (
        "http://10.4.0.12:6066"
    )


def test_the_view_asks_every_other_member_once_and_says_why_one_gave_nothing() -> None:
    import asyncio

    from aiohttp import web

    from agents.cluster import ClusterView
    from pipeline.config.settings import Config
    from pipeline.tools.procs import free_port

    asked: list[dict[str, str]] = []

    async def good(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        return web.json_response({"at": 1, "partitions": [1], "series": [entry('["errors","x"]', 4)]})

    async def failing(request: web.Request) -> web.Response:
        return web.json_response({"status": "error", "error": "at: expected epoch ms"}, status=400)

    async def strange(request: web.Request) -> web.Response:
        return web.Response(text="<html>a proxy's page</html>")

    class Own:
        def active_partitions(self) -> set[int]:
            return {0}

    class NoSeries:
        def states(self) -> dict[str, Any]:
            return {}

    async def run() -> Any:
        runners = []
        urls = []
        for handler in (good, failing, strange):
            app = web.Application()
            app.router.add_get("/api/v1/series", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{port}")
        refused = f"http://127.0.0.1:{free_port()}"
        topic = "t-cells-changelog"
        distribution = {
            "http://self:6066": {topic: [0]},
            urls[0]: {topic: [1]},
            urls[1]: {topic: [2]},
            urls[2]: {topic: [3]},
            refused: {topic: [4]},
        }
        config = Config.model_validate({"topics": {"partitions": 5}})
        view = ClusterView(
            config,
            NoSeries().states,
            Own().active_partitions,
            lambda: distribution,
            topic,
            "http://self:6066",
        )
        try:
            return urls, await view.series(1_000, frozenset({"errors", "route"}), timeout_s=5)
        finally:
            await view.close()
            for runner in runners:
                await runner.cleanup()

    urls, whole = asyncio.run(run())
    assert asked == [{"at": "1000", "scope": "local", "kind": "errors,route"}]
    by_url = {w["url"]: w for w in whole.workers}
    assert by_url["http://self:6066"]["self"] and by_url["http://self:6066"]["status"] == "ok"
    assert by_url[urls[0]]["status"] == "ok" and by_url[urls[0]]["served"] == [1]
    assert by_url[urls[1]]["error"] == "HTTP 400: at: expected epoch ms"
    assert by_url[urls[2]]["error"] == "unexpected answer (JSONDecodeError)"
    refused = next(w for w in whole.workers if w["url"] not in (*urls, "http://self:6066"))
    assert refused["status"] == "missing", refused
    assert refused["error"] == "cannot connect (connection refused)", refused
    assert whole.series == [entry('["errors","x"]', 4)]
    assert whole.missing_partitions == [2, 3, 4]
