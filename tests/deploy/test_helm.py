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

from ensemble_tap.config import load_config

CHART = Path(__file__).resolve().parents[2] / "charts" / "ensemble-tap"
KUBERNETES_VERSIONS = ["1.29.0", "1.33.0", "1.37.0"]
SERVICE_MONITOR = "monitoring.coreos.com/v1"  # a CRD: not in the core schemas


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out = helm.Chart.load(CHART).render(values or {}, name="tap", namespace="prod")
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
    loaded = load_config(str(path), environ=secret_env)
    assert loaded.config.providers["stripe"].secret == ["whsec_x"]
    assert loaded.config.clickhouse.mode == "server"
    assert loaded.warnings == []


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
    loaded = load_config(str(path), environ={"ACME_SIGNING_SECRET": "s"})
    assert loaded.config.providers["acme"].secret == ["s"]
