"""camvis.progress: the one progress bar of synth, check, build, train, predict, local launches and aggregate."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from camvis.progress import progress_bar, track


class _Terminal(io.StringIO):
    """A stderr that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def test_disabled_bar_imports_no_rich_and_prints_nothing() -> None:
    code = (
        "import sys\n"
        "from camvis.progress import progress_bar, track\n"
        "with progress_bar('x', 3, enabled=False) as advance:\n"
        "    advance(); advance(2)\n"
        "assert list(track([1, 2], 'y', enabled=False)) == [1, 2]\n"
        "print('rich' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (out.stdout, out.stderr) == ("False\n", "")


def test_enabled_bar_shows_description_and_total_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("building store", 5, enabled=True) as advance:
        advance()
        advance(4)
    out, err = capsys.readouterr()
    assert out == ""
    assert "building store" in err and "5/5" in err and "100%" in err


def test_auto_bar_only_when_stderr_is_a_terminal(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with progress_bar("predicting", 2) as advance:  # capsys's stderr is no terminal
        advance(2)
    assert capsys.readouterr() == ("", "")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar("predicting", 2) as advance:
        advance(2)
    assert "predicting" in terminal.getvalue()


def test_bar_is_stopped_when_the_body_raises(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyError), progress_bar("a", 3, enabled=True):
        raise KeyError("boom")
    # rich allows one live display at a time: a bar left running would make this one fail
    with progress_bar("b", 1, enabled=True) as advance:
        advance()
    assert "b" in capsys.readouterr().err


@pytest.mark.parametrize("enabled", [False, True])
def test_track_yields_every_item_in_order(enabled: bool, capsys: pytest.CaptureFixture[str]) -> None:
    items = ["v1_a", "v1_b", "v1_c"]
    assert list(track(items, "checking v1", enabled=enabled)) == items
    err = capsys.readouterr().err
    assert ("checking v1" in err and "3/3" in err) if enabled else err == ""


def test_track_of_no_items_shows_no_bar(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(track([], "checking empty", enabled=True)) == []
    assert capsys.readouterr() == ("", "")


def test_bar_draws_on_the_console_it_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    # camvis-launch --local draws its jobs bar on the console it prints its report to
    from rich.console import Console

    target = io.StringIO()
    console = Console(file=target, force_terminal=True, width=100)
    assert list(track(["a", "b"], "local jobs", enabled=True, console=console)) == ["a", "b"]
    assert "local jobs" in target.getvalue() and "2/2" in target.getvalue()
    assert capsys.readouterr() == ("", "")
