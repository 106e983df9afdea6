"""charts/ensemble-tap rendered and linted offline (helm-python-sdk: Helm's engine, no binary,
no cluster), every manifest validated against the Kubernetes API schemas of the versions the
chart supports (kubernetes-validate), the rendered config checked as the service loads it, and
the value combinations a platform engineer uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import chart as helm
from helm_python.errors import HelmRenderError

from ensemble_tap.config import load_config
from ensemble_tap.providers import REGISTRY

CHART = Path(__file__).resolve().parents[2] / "charts" / "ensemble-tap"
KUBERNETES_VERSIONS = ["1.29.0", "1.33.0", "1.37.0"]
SERVICE_MONITOR = "monitoring.coreos.com/v1"  # a CRD: not in the core schemas


def render(values: dict[str, Any] | None = None, release: str = "tap") -> list[dict[str, Any]]:
    out = helm.Chart.load(CHART).render(values or {}, name=release, namespace="prod")
    documents: list[dict[str, Any]] = []
    for name, text in out.items():
        if name.endswith(".yaml"):
            documents.extend(d for d in yaml.safe_load_all(text) if d)
    return documents


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def by_name(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in of_kind(documents, kind)}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [found] = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, dict)
    return found


def test_lint_strict_is_clean() -> None:
    result = helm.lint(CHART, strict=True)
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []


COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything on": {
        "image": {"digest": "sha256:" + "a" * 64},
        "autoscaling": {"enabled": True},
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": {"enabled": True, "allowedNamespaces": ["ingress-nginx"]},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "tls": [{"hosts": ["tap.example.com"], "secretName": "tls"}],
        },
        "persistence": {"enabled": True, "storageClass": "fast"},
        "serviceMonitor": {"enabled": True},
        "existingSecret": "tap-secrets",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    },
    "all in one": {"allInOne": True, "persistence": {"enabled": True}},
    "pollers, IPv6 and workers behind a network policy": {
        "networkPolicy": {"enabled": True},
        "extraEnv": [{"name": "LOG_FORMAT", "value": "json"}],
        "config": {
            "server": {"workers": 4},
            "nats": {"url": "nats://[fd00::1]:4222,tls://nats.example.com"},
            "clickhouse": {"addr": "[fd00::2]", "secure": True},
            "providers": {
                "hubspot": {
                    "mode": "poll",
                    "base_url": "https://api.hubapi.com",
                    "access_token": "${HUBSPOT_ACCESS_TOKEN}",
                }
            },
        },
    },
}


@pytest.mark.parametrize("values", COMBINATIONS.values(), ids=COMBINATIONS.keys())
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_follows_the_kubernetes_schema(values: dict[str, Any], version: str) -> None:
    for document in render(values):
        if document["apiVersion"] == SERVICE_MONITOR:
            continue
        kubernetes_validate.validate(document, version, strict=True)


def test_defaults_split_the_scalable_ingress_from_the_singletons() -> None:
    documents = render()
    deployments = by_name(documents, "Deployment")
    ingress, core = deployments["tap-ensemble-tap"], deployments["tap-ensemble-tap-core"]
    assert ingress["spec"]["replicas"] == 2
    assert ingress["spec"]["strategy"]["type"] == "RollingUpdate"
    assert container(ingress)["args"] == [
        "serve",
        "--config",
        "/etc/ensemble-tap/config.yaml",
        "--role",
        "ingress",
    ]
    assert core["spec"]["replicas"] == 1
    assert core["spec"]["strategy"]["type"] == "Recreate"
    assert container(core)["args"][3:] == ["--role", "poller", "--role", "sink", "--role", "admin"]
    for deployment in (ingress, core):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container(deployment)["securityContext"]["readOnlyRootFilesystem"] is True
        assert container(deployment)["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container(deployment)["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert spec["automountServiceAccountToken"] is False
    services = by_name(documents, "Service")
    assert (
        services["tap-ensemble-tap"]["spec"]["selector"]["app.kubernetes.io/component"] == "ingress"
    )
    assert (
        services["tap-ensemble-tap-admin"]["spec"]["selector"]["app.kubernetes.io/component"]
        == "core"
    )


def test_the_rendered_config_is_what_the_service_accepts(tmp_path: Path) -> None:
    values = {
        "config": {
            "data_dir": "/var/lib/ensemble-tap/data",
            "server": {"port": 8080, "admin_token": "${TAP_ADMIN_TOKEN}"},
            "nats": {"url": "nats://nats:4222"},
            "providers": {"stripe": {"secret": "${STRIPE_WEBHOOK_SECRET}"}},
            "clickhouse": {"addr": "clickhouse:8123", "password": "${CLICKHOUSE_PASSWORD}"},
        },
        "existingSecret": "tap-secrets",
    }
    [config_map] = of_kind(render(values), "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    secret_env = {
        "TAP_ADMIN_TOKEN": "t" * 32,
        "STRIPE_WEBHOOK_SECRET": "whsec_x",
        "CLICKHOUSE_PASSWORD": "pw",
    }
    loaded = load_config(str(path), environ=secret_env, providers=REGISTRY)
    assert loaded.config.providers["stripe"].secret == ["whsec_x"]
    assert loaded.config.clickhouse.mode == "server"
    assert loaded.warnings == []


def test_pods_drain_before_they_stop() -> None:
    """A rolling update answers no 5xx: each pod keeps serving for shutdown_delay after
    SIGTERM (readiness 503), within a grace period that also covers shutdown_timeout."""
    documents = render()
    [config_map] = of_kind(documents, "ConfigMap")
    server = yaml.safe_load(config_map["data"]["config.yaml"])["server"]
    assert server["shutdown_delay"] == "5s"
    for deployment in of_kind(documents, "Deployment"):
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = by_name(render(values), "Deployment")["tap-ensemble-tap"]
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) != checksum(
        {"config": {"log_level": "debug", "nats": {"url": "nats://n:4222"}}}
    )


def test_a_digest_pins_the_image() -> None:
    digest = "sha256:" + "b" * 64
    for deployment in of_kind(
        render({"image": {"digest": digest, "tag": "ignored"}}), "Deployment"
    ):
        assert container(deployment)["image"] == f"ghcr.io/evalops/ensemble-tap@{digest}"
    for deployment in of_kind(render({"image": {"tag": "1.2.3"}}), "Deployment"):
        assert container(deployment)["image"] == "ghcr.io/evalops/ensemble-tap:1.2.3"


def egress_ports(values: dict[str, Any]) -> list[int]:
    [policy] = of_kind(render({"networkPolicy": {"enabled": True}, **values}), "NetworkPolicy")
    rules = policy["spec"]["egress"]
    assert rules[0]["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    return [port["port"] for rule in rules[1:] for port in rule["ports"]]


@pytest.mark.parametrize(
    ("config", "ports"),
    [
        ({"nats": {"url": "nats://nats:4222"}}, [4222]),
        ({"nats": {"url": "nats://a,tls://b:4443"}}, [4222, 4443]),  # without and with a port
        ({"nats": {"url": "nats://n:4222"}, "clickhouse": {"addr": "ch"}}, [4222, 8123]),
        (
            {"nats": {"url": "nats://n:4222"}, "clickhouse": {"addr": "ch", "secure": True}},
            [4222, 8443],
        ),
        (
            {"nats": {"url": "nats://n:4222"}, "clickhouse": {"addr": "a:18123,b:18123"}},
            [4222, 18123],
        ),
        (
            {"nats": {"url": "nats://n:4222"}, "vault": {"address": "https://vault.example.com"}},
            [4222, 443],
        ),
        (
            {"nats": {"url": "nats://n:4222"}, "vault": {"address": "http://vault:8200"}},
            [4222, 8200],
        ),
        # userinfo, IPv6 with and without a port, the WebSocket schemes' defaults
        (
            {"nats": {"url": "nats://u:p@[fd00::1]:4223,wss://w.example.com,ws://w"}},
            [4223, 443, 80],
        ),
        (
            {"nats": {"url": "nats://n"}, "clickhouse": {"addr": "[fd00::2],[fd00::3]:18123"}},
            [4222, 8123, 18123],
        ),
        # a poller reaches its SaaS API on 443, and on a port its base_url/token_url names
        ({"nats": {"url": "nats://n"}, "providers": {"hubspot": {"mode": "poll"}}}, [4222, 443]),
        (
            {
                "nats": {"url": "nats://n"},
                "providers": {
                    "salesforce": {
                        "mode": "webhook+poll",
                        "base_url": "${SALESFORCE_BASE_URL}",
                        "tenants": {"eu": {"token_url": "https://login.example.com:8443/token"}},
                    }
                },
            },
            [4222, 443, 8443],
        ),
        # webhooks only: no egress to the providers
        ({"nats": {"url": "nats://n"}, "providers": {"stripe": {"secret": "x"}}}, [4222]),
    ],
)
def test_network_policy_egress_follows_the_config(config: dict[str, Any], ports: list[int]) -> None:
    assert egress_ports({"config": config}) == ports


def test_vault_kubernetes_auth_mounts_the_service_account_token() -> None:
    values = {
        "serviceAccount": {"automount": True, "annotations": {"team": "data"}},
        "config": {
            "nats": {"url": "nats://n:4222"},
            "vault": {
                "address": "http://vault:8200",
                "auth_method": "kubernetes",
                "kubernetes_role": "tap",
            },
            "providers": {"stripe": {"secret": "vault://secret/data/tap#stripe"}},
        },
    }
    documents = render(values)
    [account] = of_kind(documents, "ServiceAccount")
    assert account["automountServiceAccountToken"] is True
    for deployment in of_kind(documents, "Deployment"):
        assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is True


def test_autoscaling_pdb_persistence_and_all_in_one() -> None:
    documents = render(COMBINATIONS["everything on"])
    [hpa] = of_kind(documents, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tap-ensemble-tap"
    assert "replicas" not in by_name(documents, "Deployment")["tap-ensemble-tap"]["spec"]
    [pdb] = of_kind(documents, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "ingress"
    core = by_name(documents, "Deployment")["tap-ensemble-tap-core"]
    volumes = {v["name"]: v for v in core["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "tap-ensemble-tap"
    assert [d["kind"] for d in documents if d["apiVersion"] == SERVICE_MONITOR] == [
        "ServiceMonitor"
    ]
    single = render(COMBINATIONS["all in one"])
    [deployment] = of_kind(single, "Deployment")
    assert container(deployment)["args"] == ["serve", "--config", "/etc/ensemble-tap/config.yaml"]
    assert (
        deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    )
    assert of_kind(single, "HorizontalPodAutoscaler") == []


# Values that are Kubernetes or service objects as a whole: listed once, not key by key.
OPAQUE_VALUES = {"config", "podSecurityContext", "securityContext"}


def test_the_readme_lists_every_value() -> None:
    def paths(tree: dict[str, Any], prefix: str = "") -> list[str]:
        found = []
        for key, value in tree.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and key not in OPAQUE_VALUES:
                found.extend(paths(value, path + "."))
            else:
                found.append(path)
        return found

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    assert sorted(set(paths(values)) - listed) == []


def test_bootstrap_values_render_and_check(tmp_path: Path) -> None:
    """The values scripts/bootstrap.sh writes (tests/deploy/test_scripts.py checks its output)."""
    values = {
        "existingSecret": "tap-ensemble-tap-onboarding",
        "config": {
            "nats": {"url": "nats://nats:4222"},
            "providers": {"acme": {"secret": "${ACME_SIGNING_SECRET}"}},
        },
    }
    [config_map] = of_kind(render(values), "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    loaded = load_config(str(path), environ={"ACME_SIGNING_SECRET": "s"}, providers=REGISTRY)
    assert loaded.config.providers["acme"].secret == ["s"]


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"nats": {"url": "${NATS_URL}"}}, 'config.nats.url "${NATS_URL}"'),
        (
            {"nats": {"url": "nats://n"}, "vault": {"address": "${VAULT_ADDR}"}},
            'config.vault.address "${VAULT_ADDR}"',
        ),
        ({"nats": {"url": "nats://n"}, "clickhouse": {"addr": "ch,a:b:c"}}, '"a:b:c" is not'),
    ],
)
def test_an_address_the_chart_cannot_read_fails_instead_of_a_wrong_policy(
    config: dict[str, Any], named: str
) -> None:
    with pytest.raises(HelmRenderError, match=re.escape(named)):
        render({"networkPolicy": {"enabled": True}, "config": config})
    # Without derived rules: DNS and the operator's own rules only.
    own = [{"ports": [{"port": 4222, "protocol": "TCP"}]}]
    [policy] = of_kind(
        render(
            {
                "networkPolicy": {"enabled": True, "egressFromConfig": False, "extraEgress": own},
                "config": config,
            }
        ),
        "NetworkPolicy",
    )
    assert policy["spec"]["egress"][1:] == own


def test_server_workers_apply_to_the_webhook_pods_only(tmp_path: Path) -> None:
    """A process without the ingress role refuses server.workers > 1 (app.py): the singleton
    pod is started with TAP_SERVER_WORKERS=1, the webhook pods keep the configured number."""
    values = COMBINATIONS["pollers, IPv6 and workers behind a network policy"]
    documents = render(values)
    [config_map] = of_kind(documents, "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    deployments = by_name(documents, "Deployment")
    workers = {}
    for name, deployment in deployments.items():
        env = {e["name"]: e["value"] for e in container(deployment).get("env", [])}
        assert env["LOG_FORMAT"] == "json"  # extraEnv kept
        secret_env = {"HUBSPOT_ACCESS_TOKEN": "pat-x"}  # what existingSecret would give
        workers[name] = load_config(
            str(path), environ=secret_env | env, providers=REGISTRY
        ).config.server.workers
    assert workers == {"tap-ensemble-tap": 4, "tap-ensemble-tap-core": 1}


def test_names_are_the_ones_the_scripts_address_whatever_the_release() -> None:
    """scripts/smoke-onboarding.sh and bootstrap.sh use <release>-ensemble-tap[-admin]."""
    documents = render(release="ensemble-tap")
    assert sorted(by_name(documents, "Service")) == [
        "ensemble-tap-ensemble-tap",
        "ensemble-tap-ensemble-tap-admin",
    ]


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"autoscaling": {"enabled": True}}, "needs resources.requests.cpu"),
        (
            {"replicaCount": 1, "podDisruptionBudget": {"enabled": True}},
            "would block every eviction",
        ),
        (
            {
                "autoscaling": {"enabled": True, "minReplicas": 1},
                "resources": {"requests": {"cpu": "100m"}},
                "podDisruptionBudget": {"enabled": True},
            },
            "would block every eviction",
        ),
        ({"config": {"nats": {"url": ""}}}, "config.nats.url is required unless allInOne"),
        ({"core": {"replicaCount": 3}}, "needs config.state.backend: nats"),
        (
            {"core": {"replicaCount": 3}, "config": {"state": {"backend": "nats"}}},
            "needs config.server.admin_replay_store_backend: nats",
        ),
        (
            {
                "core": {"replicaCount": 3},
                "config": {
                    "state": {"backend": "nats"},
                    "server": {"admin_replay_store_backend": "nats"},
                },
            },
            "needs config.clickhouse.addr",
        ),
    ],
)
def test_values_that_cannot_work_fail_the_install(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(HelmRenderError, match=re.escape(reason)):
        render(values)


def test_all_in_one_runs_on_the_embedded_broker() -> None:
    [deployment] = of_kind(
        render({"allInOne": True, "config": {"nats": {"url": ""}}}), "Deployment"
    )
    assert "env" not in container(deployment)


def test_core_replicas_with_the_shared_backends_roll_and_keep_no_volume(tmp_path: Path) -> None:
    config = {
        "nats": {"url": "nats://nats-0:4222,nats://nats-1:4222", "stream_replicas": 3},
        "state": {"backend": "nats", "lease_ttl": "15s"},
        "server": {"admin_replay_store_backend": "nats"},
        "clickhouse": {"addr": "clickhouse:8123"},
    }
    values = {"core": {"replicaCount": 3}, "persistence": {"enabled": True}, "config": config}
    documents = render(values)
    core = by_name(documents, "Deployment")["tap-ensemble-tap-core"]
    assert core["spec"]["replicas"] == 3
    assert core["spec"]["strategy"]["type"] == "RollingUpdate"
    volumes = core["spec"]["template"]["spec"].get("volumes", [])
    assert not any("persistentVolumeClaim" in volume for volume in volumes)
    assert "PersistentVolumeClaim" not in {document["kind"] for document in documents}
    [configmap] = by_name(documents, "ConfigMap").values()
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    loaded = load_config(str(path), environ={}, providers=REGISTRY).config
    assert loaded.state.backend == "nats" and loaded.server.admin_replay_store_backend == "nats"
