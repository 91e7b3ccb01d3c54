"""Every setting a service reads has a home on Kubernetes: the shared followup-config
ConfigMap, the service's own ConfigMap (generated from its settings class), its Secret
(documented, never committed), or the Deployment's env."""

from __future__ import annotations

import yaml

from common.config import Settings, env_name
from deploy.k8s.manifests import KAFKA_SECRETS, POD_ENV, SERVICES, config_env
from tests.support import ops

# Identity and the demo's virtual clock: not deployment settings.
NOT_DEPLOYED = {
    "service",
    "clock_anchor_real",
    "clock_anchor_virtual",
    "clock_speed",
    "clock_file",
}
BASE = ops.DEPLOY / "k8s" / "base"


def shared_literals() -> set[str]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    (shared,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "followup-config"]
    return {line.split("=", 1)[0] for line in shared["literals"]}


def test_every_setting_of_every_service_is_in_a_config_map_a_secret_or_the_pod() -> None:
    shared = shared_literals()
    for spec in SERVICES:
        own = config_env(spec)
        assert (BASE / "config" / f"{spec.name}.env").read_text() == own  # generated, current
        for field in spec.settings.model_fields:
            name = env_name(field)
            homes = [
                name in shared,
                f"\n{name}=" in own or f"# {name} is unset" in own,
                field in spec.secret_keys,
                field in POD_ENV,
                field in NOT_DEPLOYED,
            ]
            assert sum(homes) == 1, f"{spec.name}: {name} has {sum(homes)} homes"


def test_the_shared_config_map_holds_the_common_settings_and_the_topic_layout() -> None:
    shared = shared_literals()
    common = {env_name(f) for f in Settings.model_fields} - {
        env_name(f) for f in NOT_DEPLOYED | POD_ENV | {"database_url", *KAFKA_SECRETS}
    }
    assert common <= shared
    assert {f"FOLLOWUP_TOPICS_{k}" for k in ("AUTO_CREATE", "REPLICATION_FACTOR")} <= shared


def test_every_secret_key_is_documented_for_whoever_creates_the_secrets() -> None:
    readme = (ops.DEPLOY / "k8s" / "README.md").read_text()
    for spec in SERVICES:
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{spec.secret}`"))
        for field in spec.secret_keys:
            assert f"`{env_name(field)}`" in row, f"{spec.secret}: {env_name(field)}"
