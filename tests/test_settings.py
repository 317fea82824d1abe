"""Settings: file and environment precedence, clear errors, the generated example stays in sync."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chromowatch.cli import main
from chromowatch.errors import ConfigError
from chromowatch.settings import effective_values, generate_example, load_settings

REPO = Path(__file__).resolve().parents[1]


def test_defaults_live_under_the_users_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    s = load_settings().settings
    assert s.paths.data == tmp_path / "chromowatch"
    assert s.paths.db == tmp_path / "chromowatch" / "chromowatch.sqlite3"
    assert s.paths.models == tmp_path / "chromowatch" / "models"


def test_file_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[classify]\nbatch_size = 8\ndevice = "cpu"\n[paths]\ndata_dir = "/tmp/x"\n')
    monkeypatch.setenv("CHROMOWATCH_CLASSIFY__BATCH_SIZE", "16")
    loaded = load_settings(cfg)
    assert loaded.settings.classify.batch_size == 16
    assert loaded.settings.classify.device == "cpu"
    sources = {k: s for k, _, s in effective_values(loaded)}
    assert sources["classify.batch_size"] == "env CHROMOWATCH_CLASSIFY__BATCH_SIZE"
    assert sources["classify.device"] == f"file {cfg}"
    assert sources["enhance.gamma"] == "default"
    assert loaded.settings.paths.db == Path("/tmp/x/chromowatch.sqlite3")


def test_config_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[enhance]\ngamma = 2.5\n")
    monkeypatch.setenv("CHROMOWATCH_CONFIG", str(cfg))
    assert load_settings().settings.enhance.gamma == 2.5


def test_default_config_path_is_read_when_present(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "chromowatch").mkdir()
    (tmp_path / "chromowatch" / "chromowatch.toml").write_text("[segment]\npad = 9\n")
    assert load_settings().settings.segment.pad == 9


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[classify]\nbatch_size = 0\n", "classify.batch_size"),
        ('[classify]\ndevice = "tpu"\n', "classify.device"),
        ("[classify]\nbatchsize = 3\n", "classify.batchsize.*unknown key"),
        ("[nosuch]\nx = 1\n", "nosuch.*unknown key"),
        ("[enhance]\ngamma = \n", "not valid TOML"),
    ],
)
def test_wrong_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg)


def test_cli_exit_code_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[classify]\nbatch_size = -1\n")
    assert main(["--config", str(cfg), "config", "validate"]) == 2
    err = capsys.readouterr().err
    assert "classify.batch_size" in err and "Traceback" not in err
    assert main(["--config", str(tmp_path / "missing.toml"), "config", "validate"]) == 2


def test_generated_example_is_the_committed_one() -> None:
    committed = (REPO / "config" / "chromowatch.example.toml").read_text()
    assert committed == generate_example(), (
        "config/chromowatch.example.toml is stale: "
        "run `chromowatch config generate > config/chromowatch.example.toml`"
    )


def test_generated_example_loads_back(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(generate_example())
    assert load_settings(cfg).settings == load_settings().settings


def test_config_show_lists_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^enhance\.mean += 90\.0 +# default$", out, re.M)


def test_config_show_hides_passwords(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHROMOWATCH_MAIL__PASSWORD", "hunter2")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "mail.password" in out


def test_config_show_with_watch_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 item 5: paths inside lists (watch.roots) crashed `config show`."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[watch]\nroots = ["{tmp_path / "in"}"]\n'
                   f'[metrics]\ntextfile = "{tmp_path / "m.prom"}"\n')
    assert main(["--config", str(cfg), "config", "show"]) == 0
    out = capsys.readouterr().out
    assert 'watch.roots' in out and f'["{tmp_path / "in"}"]' in out
    assert main(["--config", str(cfg), "config", "show", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["watch.roots"]["value"] == [str(tmp_path / "in")]
    assert rows["watch.roots"]["source"] == f"file {cfg}"


def test_mail_enabled_needs_a_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[mail]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"mail\.host.*required when mail\.enabled"):
        load_settings(cfg)
    assert main(["--config", str(cfg), "config", "validate"]) == 2
    assert "mail.host" in capsys.readouterr().err
    cfg.write_text('[mail]\nenabled = true\nhost = "smtp.example.org"\n')
    assert load_settings(cfg).settings.mail.host == "smtp.example.org"
    cfg.write_text('[mail]\nhost = ""\n')  # mail off: no host needed
    assert load_settings(cfg).settings.mail.enabled is False
