from pathlib import Path

import pytest
from click.testing import CliRunner

from aso.cli import cli
from aso.config import OPTIONS, from_dict, load_config, render_reference_markdown
from aso.errors import ConfigError, ValidationError
from aso.ftsd import urls
from aso.installation import init_installation

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_every_option_has_a_default_and_help():
    keys = [o.key for o in OPTIONS]
    assert len(keys) == len(set(keys)), "an option is declared twice"
    for option in OPTIONS:
        assert option.help.strip(), option.key
    config = from_dict({})
    assert config.transfer.max_files_per_job == 50
    assert config.retry_manager.cooloff == 7200
    assert config.publisher.block_closure_timeout == 9400


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"transfer": {"max_files_per_job": "many"}}, "transfer.max_files_per_job: expected int"),
        ({"transfer": {"threads": True}}, "transfer.threads: expected an integer"),
        ({"transfer": {"bogus": 1}}, "transfer.bogus: unknown option"),
        ({"nosuch": {}}, "nosuch: unknown section"),
        ({"sites": {"A": {"prefix": "file:///x"}}}, "sites.A: needs string keys"),
        ({"sites": {"A": {"prefix": "file://rel", "fts": "http://f"}}}, "sites.A.prefix"),
        ({"sites": {"A": {"prefix": "file:///x", "fts": "http://f", "x": 1}}}, "sites.A.x: unknown key"),
        ({"sites": {"A": {"prefix": "root:///store", "fts": "http://f"}}}, "sites.A.prefix: 'root:///store' has no host"),
        ({"sites": {"A": {"prefix": "root://h//store/../etc", "fts": "http://f"}}}, "sites.A.prefix: .* '..' as a segment"),
        ({"sites": {"A": {"prefix": "root://h//store?x=1", "fts": "http://f"}}}, "sites.A.prefix: .* no '.' query"),
    ],
)
def test_bad_configuration_names_the_option(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        from_dict(data)


def test_root_prefixes_give_root_urls():
    config = from_dict({"sites": {"A": {"prefix": "root://eos.a.example:1094//eos/cms/", "fts": "http://f"},
                                  "B": {"prefix": "root://b.example//store", "fts": "http://f"}}})
    assert config.site("A").pfn("/store/user/u/f.root") == "root://eos.a.example:1094//eos/cms/store/user/u/f.root"
    url = config.site("B").pfn("/store/user/u/f.root")
    assert url == "root://b.example//store/store/user/u/f.root"
    assert urls.root_parts(url) == ("root://b.example", "/store/store/user/u/f.root")
    with pytest.raises(ValidationError):
        config.site("B").pfn("/store/../../etc/passwd")


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    cfg = tmp_path / "conf" / "aso.toml"
    cfg.parent.mkdir()
    cfg.write_text('[state]\nurl = "sqlite:///db/state.db"\n[sandbox]\nroot = "sb"\n')
    config = load_config(cfg)
    assert config.state.url == f"sqlite:///{cfg.parent}/db/state.db"
    assert config.sandbox.root == str(cfg.parent / "sb")


def test_missing_and_malformed_files_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[state\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_init_writes_a_loadable_embedded_installation(tmp_path):
    path = init_installation(tmp_path / "inst")
    config = load_config(path)
    assert config.state.url.startswith("sqlite:///") and str(tmp_path) in config.state.url
    assert set(config.sites) == {"T2_XX_Source", "T2_YY_Dest", "T2_ZZ_Dest"}
    for site in config.sites.values():
        assert Path(site.prefix[len("file://"):]).is_dir()
    for folder in (config.sandbox.root, config.credentials.directory, config.aso.lock_dir):
        assert Path(folder).is_dir()
    assert (Path(config.credentials.cache_dir).stat().st_mode & 0o777) == 0o700
    with pytest.raises(ConfigError, match="already exists"):
        init_installation(tmp_path / "inst")


def test_init_cli(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "aso.toml").exists()
    again = CliRunner().invoke(cli, ["init", str(tmp_path / "x")])
    assert again.exit_code == 2
    assert "already exists" in again.output


def test_configuration_reference_in_docs_is_current():
    assert DOCS.exists(), "run: aso config-reference -o docs/configuration.md"
    assert DOCS.read_text() == render_reference_markdown(), (
        "docs/configuration.md is stale; run: aso config-reference -o docs/configuration.md"
    )
