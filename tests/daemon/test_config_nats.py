"""The NATS keys of the configuration for a cluster: several server URLs and the execution
stream's replica count (docs/deployment.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.bus import server_urls
from daemon.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "daemon" / "example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_one_replica_and_the_embedded_server() -> None:
    config = load_config(None, {})
    assert config.nats.url == ""
    assert config.nats.stream_replicas == 1


def test_the_shipped_example_keeps_one_replica() -> None:
    assert load_config(EXAMPLE, {}).nats.stream_replicas == 1


def test_a_list_of_urls_becomes_the_comma_separated_server_list(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[nats]\nurl = ["nats://n1:4222", " nats://n2:4222", "nats://n3:4222"]\nstream_replicas = 3\n',
        ),
        {},
    )
    assert config.nats.url == "nats://n1:4222,nats://n2:4222,nats://n3:4222"
    assert config.nats.stream_replicas == 3
    assert server_urls(config.nats.url) == ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]


def test_a_comma_separated_string_is_taken_as_it_is(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[nats]\nurl = "nats://n1:4222,nats://n2:4222"\n'), {})
    assert server_urls(config.nats.url) == ["nats://n1:4222", "nats://n2:4222"]


def test_nats_url_from_the_environment_may_list_a_cluster(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[nats]\nurl = "nats://old:4222"\nstream_replicas = 3\n'),
        {"NATS_URL": "nats://n1:4222,nats://n2:4222,nats://n3:4222"},
    )
    assert server_urls(config.nats.url) == ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]


def test_replicas_without_a_cluster_are_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nats.stream_replicas = 3 needs a NATS cluster"):
        load_config(write(tmp_path, "[nats]\nstream_replicas = 3\n"), {})


@pytest.mark.parametrize("replicas", [0, 6, -1])
def test_replicas_out_of_jetstreams_range_are_refused(tmp_path: Path, replicas: int) -> None:
    with pytest.raises(ConfigError, match=r"nats.stream_replicas must be between 1 and 5"):
        load_config(write(tmp_path, f'[nats]\nurl = "nats://n1:4222"\nstream_replicas = {replicas}\n'), {})


def test_an_empty_url_in_the_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nats.url: an empty server URL"):
        load_config(write(tmp_path, '[nats]\nurl = "nats://n1:4222,,nats://n2:4222"\n'), {})


def test_a_list_of_non_strings_is_a_type_error_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$\.nats\.url"):
        load_config(write(tmp_path, "[nats]\nurl = [1, 2]\n"), {})
