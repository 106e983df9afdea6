"""load_config: files, placeholders, TAP_* environment overrides and list handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ensemble_tap.config import ConfigError, load_config
from ensemble_tap.config.loader import env_override_path
from ensemble_tap.config.models import Config
from ensemble_tap.config.reference_semantics import EMBEDDED_BROKER
from ensemble_tap.providers import REGISTRY
from tests.support.configs import load_text, only_problem, problems_of, write_config

# ---------------------------------------------------------------------------------- files


def test_explicit_file_is_loaded(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        log_level: DEBUG
        server:
          port: 9090
        providers:
          stripe:
            secret: whsec_test
        """,
    )
    assert loaded.source == str(tmp_path / "config.yaml")
    assert loaded.config.log_level == "debug"
    assert loaded.config.server.port == 9090
    assert loaded.config.providers["stripe"].secret == ["whsec_test"]
    assert loaded.warnings == [EMBEDDED_BROKER]


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={}, providers=REGISTRY)
    assert info.value.problems == [f"config file {path} does not exist"]
    assert info.value.source == str(path)
    assert "does not exist" in str(info.value)


def test_unreadable_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), environ={}, providers=REGISTRY)  # a directory
    assert info.value.problems[0].startswith(f"cannot read config file {tmp_path}")


def test_default_path_used_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, "server:\n  port: 7000\n")
    loaded = load_config(None, environ={}, providers=REGISTRY)
    assert loaded.source == "config.yaml"
    assert loaded.config.server.port == 7000


def test_defaults_without_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_config(None, environ={}, providers=REGISTRY)
    assert loaded.source == "built-in defaults"
    assert loaded.config == Config()
    assert loaded.warnings == [EMBEDDED_BROKER]


def test_defaults_still_take_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_config(None, environ={"TAP_SERVER_PORT": "9999"}, providers=REGISTRY)
    assert loaded.config.server.port == 9999


def test_default_path_with_errors_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, "server:\n  prot: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, providers=REGISTRY)
    assert info.value.source == "config.yaml"
    assert info.value.problems == ["server.prot: unknown key"]


def test_environ_none_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith("TAP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TAP_SERVER_PORT", "9191")
    monkeypatch.setenv("TAP_TEST_PLACEHOLDER", "from-process")
    path = write_config(tmp_path, "server:\n  admin_token: ${TAP_TEST_PLACEHOLDER}\n")
    loaded = load_config(str(path), providers=REGISTRY)
    assert loaded.config.server.port == 9191
    assert loaded.config.server.admin_token == "from-process"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n", "null\n"])
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    loaded = load_text(tmp_path, text)
    assert loaded.config == Config()
    assert loaded.source == str(tmp_path / "config.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", "true\n"])
def test_non_mapping_top_level(tmp_path: Path, text: str) -> None:
    assert only_problem(tmp_path, text) == "the top level must be a mapping of sections"


@pytest.mark.parametrize(
    "text",
    [
        "server: [unclosed\n",
        "server:\n  port: 1\n bad-indent: 2\n",
        "a: b: c\n",
        "key: 'unterminated\n",
        "server:\n\tport: 1\n",
    ],
)
def test_invalid_yaml(tmp_path: Path, text: str) -> None:
    problem = only_problem(tmp_path, text)
    assert problem.startswith("not valid YAML:")


def test_config_error_message_lists_every_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server:\n  prot: 1\n  hots: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={}, providers=REGISTRY)
    message = str(info.value)
    assert message.startswith(f"invalid config ({path}), 2 problems:")
    assert "server.prot: unknown key" in message
    assert "server.hots: unknown key" in message


def test_config_error_message_singular(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server:\n  prot: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={}, providers=REGISTRY)
    assert str(info.value) == f"invalid config ({path}), 1 problem:\n  server.prot: unknown key"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("serve:\n  port: 1\n", "serve: unknown key"),
        ("server:\n  PORT: 1\n", "server.PORT: unknown key"),
        ("nats:\n  urls: nats://x\n", "nats.urls: unknown key"),
        (
            "providers:\n  acme:\n    secret: s\n    secrets: s\n",
            "providers.acme.secrets: unknown key",
        ),
        (
            "providers:\n  acme:\n    secret: s\n    tenants:\n      t1:\n        mode: poll\n",
            "providers.acme.tenants.t1.mode: unknown key",
        ),
        ("clickhouse:\n  adr: x\n", "clickhouse.adr: unknown key"),
        ("vault:\n  adress: x\n", "vault.adress: unknown key"),
        ("state:\n  path: x\n", "state.path: unknown key"),
    ],
)
def test_unknown_keys_are_errors(tmp_path: Path, text: str, problem: str) -> None:
    assert only_problem(tmp_path, text) == problem


@pytest.mark.parametrize("section", ["server", "providers", "nats", "clickhouse", "vault", "state"])
def test_null_section_means_defaults(tmp_path: Path, section: str) -> None:
    """``server:`` with every line commented out is the same as leaving the section out."""
    loaded = load_text(tmp_path, f"{section}:\n  # port: 1\n")
    assert loaded.config == Config()


def test_null_key_means_default(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "server:\n  port:\nnats:\n  url: ~\n  max_reconnects: null\n")
    assert loaded.config.server.port == 8080
    assert loaded.config.nats.url is None
    assert loaded.config.nats.max_reconnects == -1


def test_null_provider_and_tenant_entries(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        providers:
          acme:
            secret: s
            tenants:
              tenant-a:
              tenant-b:
        """,
    )
    assert set(loaded.config.providers["acme"].tenants) == {"tenant-a", "tenant-b"}


def test_explicit_zero_is_a_real_zero(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        server:
          admin_replay_max_queued_per_ip: 0
          admin_replay_max_queued_per_token: 0
        nats:
          max_reconnects: 0
          publish_max_retries: 0
        clickhouse:
          max_idle_conns: 0
        """,
    )
    cfg = loaded.config
    assert cfg.server.admin_replay_max_queued_per_ip == 0
    assert cfg.server.admin_replay_max_queued_per_token == 0
    assert cfg.nats.max_reconnects == 0
    assert cfg.nats.publish_max_retries == 0
    assert cfg.clickhouse.max_idle_conns == 0


def test_numbers_become_strings_for_string_keys(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "server:\n  admin_token: 12345\nproviders:\n  acme:\n    secret: 4242\n    realm_id: 77\n",
    )
    assert loaded.config.server.admin_token == "12345"
    assert loaded.config.providers["acme"].secret == ["4242"]
    assert loaded.config.providers["acme"].realm_id == "77"


# ---------------------------------------------------------------------------- placeholders


def test_placeholders_are_expanded(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        data_dir: ${DATA}/tap
        server:
          admin_token: ${ADMIN}
          admin_token_read: prefix-${ADMIN}-suffix
        providers:
          acme:
            secret: ${ACME_SECRET}
        """,
        {"DATA": "/var/lib", "ADMIN": "tok", "ACME_SECRET": "sekrit"},
    )
    cfg = loaded.config
    assert cfg.data_dir == "/var/lib/tap"
    assert cfg.server.admin_token == "tok"
    assert cfg.server.admin_token_read == "prefix-tok-suffix"
    assert cfg.providers["acme"].secret == ["sekrit"]


def test_unset_placeholder_is_empty(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "server:\n  admin_token: ${UNSET_VAR}\n  host: a${UNSET_VAR}b\n")
    assert loaded.config.server.admin_token == ""
    assert loaded.config.server.host == "ab"


def test_default_placeholder(tmp_path: Path) -> None:
    text = "server:\n  host: ${HOST:-127.0.0.1}\n  admin_token: ${TOKEN:-}\n"
    assert load_text(tmp_path, text).config.server.host == "127.0.0.1"
    assert load_text(tmp_path, text).config.server.admin_token == ""
    assert load_text(tmp_path, text, {"HOST": "::"}).config.server.host == "::"
    # an empty variable counts as unset, like the shell's ":-"
    assert load_text(tmp_path, text, {"HOST": ""}).config.server.host == "127.0.0.1"


def test_default_placeholder_may_contain_punctuation(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "providers:\n  acme:\n    secret: '${S:-a,b: c #d}'\n")
    assert loaded.config.providers["acme"].secret == ["a,b: c #d"]


def test_placeholder_in_number_and_bool_keys(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "server:\n  port: ${PORT}\nnats:\n  secure: ${SECURE:-false}\n  max_age: ${AGE}\n",
        {"PORT": "9000", "AGE": "7d"},
    )
    assert loaded.config.server.port == 9000
    assert loaded.config.nats.secure is False
    assert loaded.config.nats.max_age == 7 * 86400


@pytest.mark.parametrize(
    "value",
    [
        "a: b #c",
        "- item",
        "[1, 2]",
        "{x: y}",
        "*alias",
        "&anchor v",
        "!!binary AAAA",
        "'quoted\"",
        "line1\nline2: x",
        "${NESTED}",
        "$$",
    ],
)
def test_placeholder_value_never_changes_the_document(tmp_path: Path, value: str) -> None:
    loaded = load_text(
        tmp_path,
        "server:\n  admin_token: ${TOKEN}\n  port: 8081\n",
        {"TOKEN": value, "NESTED": "expanded-twice"},
    )
    assert loaded.config.server.admin_token == value
    assert loaded.config.server.port == 8081


def test_placeholder_with_yaml_syntax_inside_a_list(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "providers:\n  acme:\n    secret:\n      - ${A}\n      - ${B}\n",
        {"A": "a: b #c", "B": "x, y"},
    )
    assert loaded.config.providers["acme"].secret == ["a: b #c", "x, y"]


def test_dollar_escape(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        server:
          admin_token: pa$$word
          admin_token_read: $${NOT_EXPANDED}
          admin_token_replay: $$$$
          admin_token_cancel: $${X}${X}
        """,
        {"NOT_EXPANDED": "oops", "X": "x"},
    )
    server = loaded.config.server
    assert server.admin_token == "pa$word"
    assert server.admin_token_read == "${NOT_EXPANDED}"
    assert server.admin_token_replay == "$$"
    assert server.admin_token_cancel == "${X}x"


def test_bare_dollar_var_is_not_expanded(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        "server:\n  admin_token: $HOME\n  admin_token_read: a$b$\n",
        {"HOME": "/root", "b": "x"},
    )
    assert loaded.config.server.admin_token == "$HOME"
    assert loaded.config.server.admin_token_read == "a$b$"


@pytest.mark.parametrize("text", ["${}", "${1X}", "${X-default}", "${X", "${X:+alt}"])
def test_malformed_placeholders_stay_literal(tmp_path: Path, text: str) -> None:
    loaded = load_text(tmp_path, f"server:\n  admin_token: '{text}'\n", {"X": "set"})
    assert loaded.config.server.admin_token == text


def test_placeholders_are_not_expanded_in_keys_or_comments(tmp_path: Path) -> None:
    # a required placeholder in a comment is never evaluated
    loaded = load_text(tmp_path, "server:  # ${COMMENT:?never checked}\n  port: 8082\n")
    assert loaded.config.server.port == 8082
    # a placeholder in a key stays literal, so it fails the provider-name rule
    problem = only_problem(tmp_path, "providers:\n  ${NAME}:\n    secret: s\n", {"NAME": "acme"})
    assert problem.startswith("providers.${NAME}: provider names must be lower-case")


def test_required_placeholder_set(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "server:\n  admin_token: ${T:?needed}\n", {"T": "tok"})
    assert loaded.config.server.admin_token == "tok"


def test_required_placeholder_unset_names_the_key_path(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path,
        "providers:\n  acme:\n    secret: ${ACME_SECRET:?set the acme webhook secret}\n",
    )
    assert problem == (
        "providers.acme.secret: environment variable ACME_SECRET is required: "
        "set the acme webhook secret"
    )


def test_required_placeholder_empty_counts_as_unset(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "server:\n  admin_token: ${T:?}\n", {"T": ""})
    assert problem == "server.admin_token: environment variable T is required: unset"


def test_required_placeholders_in_lists_and_tenants_all_reported(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        server:
          admin_token: ${A:?admin}
        providers:
          acme:
            secret:
              - ok
              - ${B:?rotation}
            tenants:
              t1:
                secret: ${C:?tenant}
        """,
    )
    assert problems == [
        "server.admin_token: environment variable A is required: admin",
        "providers.acme.secret[1]: environment variable B is required: rotation",
        "providers.acme.tenants.t1.secret: environment variable C is required: tenant",
    ]


def test_required_placeholder_error_wins_over_model_errors(tmp_path: Path) -> None:
    """Missing required variables are reported before (and instead of) decoding errors."""
    problems = problems_of(tmp_path, "server:\n  admin_token: ${A:?x}\n  prot: 1\n")
    assert problems == ["server.admin_token: environment variable A is required: x"]


def test_env_values_are_not_placeholder_expanded(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, "", {"TAP_SERVER_ADMIN_TOKEN": "${X}$$", "X": "no"})
    assert loaded.config.server.admin_token == "${X}$$"


# ------------------------------------------------------------------------- env overrides


@pytest.mark.parametrize(
    ("name", "path"),
    [
        # the reference's documented examples
        ("TAP_SERVER_PORT", ["server", "port"]),
        ("TAP_SERVER_ADMIN_TOKEN_READ", ["server", "admin_token_read"]),
        ("TAP_SERVER_ADMIN_RATE_LIMIT_PER_SEC", ["server", "admin_rate_limit_per_sec"]),
        ("TAP_NATS_URL", ["nats", "url"]),
        ("TAP_NATS__SUBJECT__PREFIX", ["nats", "subject_prefix"]),
        ("TAP_CLICKHOUSE_ADDR", ["clickhouse", "addr"]),
        ("TAP_VAULT_AUTH_METHOD", ["vault", "auth_method"]),
        ("TAP_STATE_BACKEND", ["state", "backend"]),
        ("TAP_PROVIDERS_STRIPE_SECRET", ["providers", "stripe", "secret"]),
        ("TAP_PROVIDERS_HUBSPOT_CLIENT_SECRET", ["providers", "hubspot", "client_secret"]),
        ("TAP_ADMIN_TOKEN", None),
        # top-level scalars
        ("TAP_DATA_DIR", ["data_dir"]),
        ("TAP_LOG_LEVEL", ["log_level"]),
        # nested form
        ("TAP_PROVIDERS__MY_APP__SECRET", ["providers", "my_app", "secret"]),
        ("TAP_PROVIDERS__MY_APP__CLIENT_SECRET", ["providers", "my_app", "client_secret"]),
        (
            "TAP_PROVIDERS__ACME__TENANTS__T1__SECRET",
            ["providers", "acme", "tenants", "t1", "secret"],
        ),
        (
            "TAP_PROVIDERS__MY_APP__TENANTS__TENANT_A__POLL_INTERVAL",
            ["providers", "my_app", "tenants", "tenant_a", "poll_interval"],
        ),
        # not overrides
        ("TAP_", None),
        ("TAP_SERVER", None),
        ("TAP_PROVIDERS_STRIPE", None),
        ("TAP_PROVIDERS__ACME", None),
        ("TAP_PROVIDERS__ACME__TENANTS__T1", None),
        ("TAP_PROVIDERS__ACME__OTHER__T1__SECRET", None),
        ("TAP_PROVIDERS____SECRET", None),
        ("TAP_UNKNOWN_KEY", None),
        ("TAP_ADMIN_TOKEN_SECONDARY", None),
        ("HOME", None),
        ("tap_server_port", None),
        ("XTAP_SERVER_PORT", None),
    ],
)
def test_env_override_path(name: str, path: list[str] | None) -> None:
    assert env_override_path(name) == path


def test_reference_env_examples_apply(tmp_path: Path) -> None:
    env = {
        "TAP_SERVER_PORT": "9091",
        "TAP_SERVER_ADMIN_TOKEN_READ": "reader",
        "TAP_SERVER_ADMIN_RATE_LIMIT_PER_SEC": "2.5",
        "TAP_NATS_URL": "nats://nats:4222",
        "TAP_NATS__SUBJECT__PREFIX": "x",
        "TAP_VAULT_AUTH_METHOD": "token",
        "TAP_STATE_BACKEND": "sqlite",
        "TAP_PROVIDERS_STRIPE_SECRET": "whsec_env",
        "TAP_PROVIDERS_HUBSPOT_CLIENT_SECRET": "hub-secret",
        "TAP_ADMIN_TOKEN": "ignored",
    }
    cfg = load_text(tmp_path, "", env).config
    assert cfg.server.port == 9091
    assert cfg.server.admin_token_read == "reader"
    assert cfg.server.admin_rate_limit_per_sec == 2.5
    assert cfg.nats.url == "nats://nats:4222"
    assert cfg.nats.subject_prefix == "x"
    assert cfg.vault.auth_method == "token"
    assert cfg.state.backend == "sqlite"
    # providers absent from the file are created by the override
    assert cfg.providers["stripe"].secret == ["whsec_env"]
    assert cfg.providers["hubspot"].client_secret == "hub-secret"
    # TAP_ADMIN_TOKEN names the unknown section "admin": ignored, not an override
    assert cfg.server.admin_token == ""


def test_unknown_tap_section_is_ignored_but_works_as_placeholder(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path, "server:\n  admin_token: ${TAP_ADMIN_TOKEN}\n", {"TAP_ADMIN_TOKEN": "tok"}
    )
    assert loaded.config.server.admin_token == "tok"
    assert loaded.warnings == [EMBEDDED_BROKER]


def test_clickhouse_addr_override_reaches_validation(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "", {"TAP_CLICKHOUSE_ADDR": "clickhouse:0"})
    assert problem == (
        'clickhouse.addr: entry "clickhouse:0" has invalid port: port 0 must be in range 1..65535'
    )


def test_env_overrides_file_values(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        """
        log_level: info
        data_dir: ./data
        server:
          port: 8080
          host: 127.0.0.1
        providers:
          stripe:
            secret: from-file
            tenant_id: file-tenant
        """,
        {
            "TAP_SERVER_PORT": "9000",
            "TAP_LOG_LEVEL": "WARNING",
            "TAP_DATA_DIR": "/srv/tap",
            "TAP_PROVIDERS_STRIPE_SECRET": "from-env",
        },
    ).config
    assert cfg.server.port == 9000
    assert cfg.server.host == "127.0.0.1"  # untouched keys keep file values
    assert cfg.log_level == "warning"
    assert cfg.data_dir == "/srv/tap"
    assert cfg.providers["stripe"].secret == ["from-env"]
    assert cfg.providers["stripe"].tenant_id == "file-tenant"


def test_env_override_wins_over_placeholder(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "server:\n  port: ${PORT:-9000}\n",
        {"PORT": "9001", "TAP_SERVER_PORT": "9002"},
    ).config
    assert cfg.server.port == 9002


def test_env_override_into_null_section(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "server:\nproviders:\n", {"TAP_SERVER_PORT": "9003"}).config
    assert cfg.server.port == 9003


def test_env_override_values_are_decoded(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "",
        {
            "TAP_NATS_SECURE": "true",
            "TAP_NATS_CA_FILE": "/ca.pem",
            "TAP_NATS_MAX_RECONNECTS": "0",
            "TAP_NATS_MAX_AGE": "7d",
            "TAP_NATS_STREAM_STORAGE": "MEMORY",
            "TAP_SERVER_ADMIN_MTLS_REQUIRED": "1",
            "TAP_SERVER_MAX_BODY_SIZE": "2048",
        },
    ).config
    assert cfg.nats.secure is True
    assert cfg.nats.ca_file == "/ca.pem"
    assert cfg.nats.max_reconnects == 0
    assert cfg.nats.max_age == 7 * 86400
    assert cfg.nats.stream_storage == "memory"
    assert cfg.server.admin_mtls_required is True
    assert cfg.server.max_body_size == 2048


def test_env_override_bad_value_names_the_key(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "", {"TAP_SERVER_PORT": "http"})
    assert problem.startswith("server.port: ")
    assert "'http'" in problem


def test_env_override_unknown_key_in_known_section(tmp_path: Path) -> None:
    assert only_problem(tmp_path, "", {"TAP_SERVER_PROT": "1"}) == "server.prot: unknown key"


def test_single_underscore_form_cannot_name_providers_with_underscores(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "", {"TAP_PROVIDERS_MY_APP_SECRET": "s"})
    assert "providers.my.app_secret: unknown key" in problems


def test_nested_provider_override(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "providers:\n  my_app:\n    secret: file\n    base_url: https://x\n",
        {"TAP_PROVIDERS__MY_APP__SECRET": "env"},
    ).config
    assert cfg.providers["my_app"].secret == ["env"]
    assert cfg.providers["my_app"].base_url == "https://x"


def test_nested_tenant_override(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        """
        providers:
          acme:
            secret: base
            tenants:
              t1:
                secret: file-t1
                tenant_id: tenant-one
        """,
        {
            "TAP_PROVIDERS__ACME__TENANTS__T1__SECRET": "env-t1",
            "TAP_PROVIDERS__ACME__TENANTS__T2__SECRET": "env-t2",
            "TAP_PROVIDERS__ACME__TENANTS__T2__POLL_INTERVAL": "5m",
        },
    ).config
    tenants = cfg.providers["acme"].tenants
    assert tenants["t1"].secret == ["env-t1"]
    assert tenants["t1"].tenant_id == "tenant-one"
    assert tenants["t2"].secret == ["env-t2"]
    assert tenants["t2"].poll_interval == 300.0


def test_nested_override_creates_provider(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "",
        {
            "TAP_PROVIDERS__MY_APP__TENANTS__A__SECRET": "tenant-only",
            "TAP_PROVIDERS__MY_APP__MODE": "webhook",
        },
    ).config
    assert cfg.providers["my_app"].secret == []
    assert cfg.providers["my_app"].tenants["a"].secret == ["tenant-only"]


def test_nested_override_unknown_tenant_key(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "providers:\n  acme:\n    secret: s\n",
        {"TAP_PROVIDERS__ACME__TENANTS__T1__MODE": "poll"},
    )
    assert problems == ["providers.acme.tenants.t1.mode: unknown key"]


def test_double_underscore_alias_and_single_form_resolve_deterministically(
    tmp_path: Path,
) -> None:
    env = {"TAP_NATS_SUBJECT_PREFIX": "single", "TAP_NATS__SUBJECT__PREFIX": "double"}
    first = load_text(tmp_path, "", env).config.nats.subject_prefix
    second = load_text(tmp_path, "", dict(reversed(list(env.items())))).config.nats.subject_prefix
    assert first == second


# ------------------------------------------------------------------------ lists, secrets


def test_list_keys_from_one_string_are_split_on_commas(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        """
        server:
          trusted_proxies: 10.0.0.0/8, 192.168.0.0/16
        providers:
          hubspot:
            client_secret: s
            objects: "deals,contacts , ,companies,"
            events: a,b
            signature_versions: v3,v2
        """,
    )
    assert cfg.config.server.trusted_proxies == ["10.0.0.0/8", "192.168.0.0/16"]
    hubspot = cfg.config.providers["hubspot"]
    assert hubspot.objects == ["deals", "contacts", "companies"]
    assert hubspot.events == ["a", "b"]
    assert hubspot.signature_versions == ["v3", "v2"]


def test_list_keys_from_env_are_split(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "",
        {
            "TAP_SERVER_ADMIN_ALLOWED_CIDRS": "10.0.0.0/8, 2001:db8::/32",
            "TAP_SERVER_TRUSTED_PROXIES": "127.0.0.1/32",
            "TAP_CLICKHOUSE_CONSUMER_BACKOFF": "1s, 5s,30s",
            "TAP_PROVIDERS__ACME__SECRET": "s",
            "TAP_PROVIDERS__ACME__TENANTS__T1__OBJECTS": "Opportunity,Account",
        },
    ).config
    assert cfg.server.admin_allowed_cidrs == ["10.0.0.0/8", "2001:db8::/32"]
    assert cfg.server.trusted_proxies == ["127.0.0.1/32"]
    assert cfg.clickhouse.consumer_backoff == [1.0, 5.0, 30.0]
    assert cfg.providers["acme"].tenants["t1"].objects == ["Opportunity", "Account"]


def test_yaml_lists_are_kept_as_given(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "server:\n  admin_allowed_cidrs: ['10.0.0.0/8', '::1/128']\n").config
    assert cfg.server.admin_allowed_cidrs == ["10.0.0.0/8", "::1/128"]


def test_empty_list_string(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "", {"TAP_SERVER_TRUSTED_PROXIES": ""}).config
    assert cfg.server.trusted_proxies == []


def test_secret_string_is_never_split(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "providers:\n  acme:\n    secret: 'a,b,c'\n    tenants:\n      t1:\n        secret: x,y\n",
    ).config
    assert cfg.providers["acme"].secret == ["a,b,c"]
    assert cfg.providers["acme"].tenants["t1"].secret == ["x,y"]


def test_secret_from_env_is_never_split(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "",
        {
            "TAP_PROVIDERS_STRIPE_SECRET": "whsec_a,whsec_b",
            "TAP_PROVIDERS__ACME__TENANTS__T1__SECRET": " a, b ",
        },
    ).config
    assert cfg.providers["stripe"].secret == ["whsec_a,whsec_b"]
    assert cfg.providers["acme"].tenants["t1"].secret == [" a, b "]


def test_secret_list_for_rotation(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "providers:\n  acme:\n    secret:\n      - new,with,commas\n      - old\n      - 123\n",
    ).config
    assert cfg.providers["acme"].secret == ["new,with,commas", "old", "123"]


def test_blank_secret_entries_are_dropped(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "providers:\n  acme:\n    secret:\n      - ${UNSET}\n      - real\n      - '  '\n      -\n",
    ).config
    assert cfg.providers["acme"].secret == ["real"]


def test_null_secret_entry_is_not_the_string_none(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "providers:\n  acme:\n    secret: [~]\n")
    assert problem == "providers.acme: webhook mode requires secret (base or tenant override)"


def test_blank_secret_string_is_no_secret(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "providers:\n  acme:\n    secret: '   '\n")
    assert problem == "providers.acme: webhook mode requires secret (base or tenant override)"
