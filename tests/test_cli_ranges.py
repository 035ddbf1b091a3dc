"""Every numeric option of every command has a range: a bad number is one line and exit status 2."""
import math

import pytest

from core.backbone import load_backbone
from core.cli import build_parser, main, numeric_options
from core.limits import ANY_NUMBER, CLI_ARGUMENTS, OutOfRange, cli_range


def _options():
    return [(command, action) for command, action in numeric_options(build_parser())]


def test_every_numeric_option_has_its_own_range():
    unranged = [f"{command} {action.option_strings[0]}" for command, action in _options()
                if cli_range(command, action.dest) is None]
    assert not unranged, f"add these to core/limits.py CLI_ARGUMENTS: {unranged}"
    assert len(_options()) > 40  # the walk really reaches the sub-commands


def test_every_numeric_option_refuses_nan_and_infinity(capsys):
    parser = build_parser()
    for command, action in _options():
        for text in ("nan", "inf", "-inf", "1e400"):
            with pytest.raises(SystemExit) as caught:
                parser.parse_args(command.split() + [action.option_strings[0], text])
            assert caught.value.code == 2
            error = capsys.readouterr().err.strip().splitlines()[-1]
            assert f"argument {'/'.join(action.option_strings)}: " in error, error


@pytest.mark.parametrize("argument, shown", [
    ("--yaw=nan", "--yaw: must be a finite number"),
    ("--yaw=inf", "--yaw: must be a finite number"),
    ("--truncation=nan", "--truncation: must be a finite number"),
    ("--seed=-1", "--seed: must be an integer from 0 to 2^32-1"),
    ("--seed=99999999999", "--seed: must be an integer from 0 to 2^32-1"),
    ("--seed=4294967296", "--seed: must be an integer from 0 to 2^32-1"),
    ("--fov=0", "--fov: must be a finite number from 1 to 179"),
    ("--size=50000", "--size: must be an integer from 8 to 4096 (pixels per side; a 4096^2 RGB image is 48 MiB)"),
    ("--neural-resolution=100000", "--neural-resolution: must be an integer from 8 to 512"),
    ("--neural-resolution=0", "--neural-resolution: must be an integer from 8 to 512"),
    ("--pitch=90", "--pitch: must be a finite number from -89 to 89"),
])
def test_render_refuses_the_issues_numbers_before_any_work(tmp_path, capsys, argument, shown):
    out = tmp_path / "x.png"
    assert main(["render", "--backbone", "default", "--threads", "1", argument, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert shown in captured.err and "Traceback" not in captured.err
    assert not out.exists()


def test_largest_seed_is_accepted():
    assert build_parser().parse_args(["render", "--seed", "4294967295", "--out", "x.png"]).seed == 2 ** 32 - 1


def test_factory_angle_ranges_are_ranged(capsys):
    parser = build_parser()
    for text in ("nan,10", "-10,inf", "10,-10", "-100,0"):
        with pytest.raises(SystemExit):
            parser.parse_args(["generate", f"--pitch-range={text}"])
        error = capsys.readouterr().err
        assert "argument --pitch-range: " in error and ("expected two angles" in error or "ends before" in error), error
    assert parser.parse_args(["generate", "--project", "p", "--n", "1", "--out", "o",
                              "--yaw-range=-30,30"]).yaw_range == (-30.0, 30.0)


def test_the_backbone_guards_the_same_ranges_for_the_window():
    backbone = load_backbone("default")
    for bad in (math.nan, math.inf):
        with pytest.raises(OutOfRange, match="yaw"):
            backbone.camera(bad, 0.0)
        with pytest.raises(OutOfRange, match="truncation"):
            backbone.identity_from_seed(0, bad)
    with pytest.raises(OutOfRange, match="seed"):
        backbone.identity_from_seed(-1)
    identity = backbone.identity_from_seed(2 ** 32 - 1)
    with pytest.raises(OutOfRange, match="neural resolution"):
        backbone.render(identity, backbone.camera(), neural_resolution=100000)


def test_fallback_range_is_only_a_backstop():
    assert ANY_NUMBER.contains(3) and not ANY_NUMBER.contains(math.nan)
    assert all(r.low <= r.high for r in CLI_ARGUMENTS.values())
