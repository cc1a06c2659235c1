from click.testing import CliRunner

import plugin_host
from plugin_host.cli import main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert plugin_host.__version__ in result.output
