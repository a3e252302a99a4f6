"""`/imagine` text -> ImagineArgs: every flag, and every bad input with the exact reply users read."""

from __future__ import annotations

import pytest

from bot.command_parser import (
    ASPECT_RATIOS,
    MAX_SEED,
    ImagineArgs,
    check_args,
    fit_to_limits,
    parse_imagine,
    read_imagine,
    size_for_aspect,
    with_options,
)
from bot.errors import InvalidRequest
from bot.settings import LimitsSettings

LIMITS = LimitsSettings()
EMPTY = "Your prompt is empty. Write what to draw, e.g. /imagine a red fox in the snow --ar 16:9 --seed 42"
FLAGS = (
    "The flags are: --seed N, --steps N, --ar W:H, --size WxH, --no <things to leave out>, "
    "--n N, --strength S."
)


def parse(text: str, limits: LimitsSettings = LIMITS) -> ImagineArgs:
    return parse_imagine(text, limits)


def error_of(text: str, limits: LimitsSettings = LIMITS) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse_imagine(text, limits)
    return str(caught.value)


def test_plain_prompt_leaves_everything_to_defaults() -> None:
    assert parse("  a red fox   in the snow ") == ImagineArgs(prompt="a red fox in the snow")


def test_every_flag() -> None:
    args = parse("a red fox --seed 42 --steps 28 --ar 16:9 --no text, watermark")
    assert args == ImagineArgs(
        prompt="a red fox",
        negative_prompt="text, watermark",
        seed=42,
        steps=28,
        width=1360,
        height=768,
    )


def test_flags_may_sit_between_prompt_words() -> None:
    args = parse("a red fox --seed 7 sitting on a fence --no blur --steps 10")
    assert args.prompt == "a red fox sitting on a fence"
    assert args.negative_prompt == "blur"
    assert (args.seed, args.steps) == (7, 10)


def test_no_takes_the_rest_up_to_the_next_flag() -> None:
    args = parse("portrait --no hands, extra fingers, text --seed 3")
    assert args.negative_prompt == "hands, extra fingers, text"
    assert args.seed == 3


def test_flag_with_equals_sign_and_any_case() -> None:
    args = parse("a cat --SEED=5 --size=512x768")
    assert (args.seed, args.width, args.height) == (5, 512, 768)


@pytest.mark.parametrize("dash", ["—", "–"])
def test_phone_dashes_read_as_two_hyphens(dash: str) -> None:
    args = parse(f"a cat {dash}seed 5 {dash}ar 1:1")
    assert (args.prompt, args.seed, args.width, args.height) == ("a cat", 5, 1024, 1024)


def test_a_dash_in_prose_stays_in_the_prompt() -> None:
    assert parse("a quote —Einstein").prompt == "a quote —Einstein"
    assert parse("before -- after").prompt == "before -- after"


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_every_aspect_ratio_is_near_one_megapixel_in_multiples_of_16(ratio: str) -> None:
    width, height = size_for_aspect(ratio)
    assert width % 16 == 0 and height % 16 == 0
    assert 0.9e6 <= width * height <= 1.1e6
    w, h = (int(part) for part in ratio.split(":"))
    assert abs(width / height - w / h) / (w / h) < 0.01
    assert parse(f"x --ar {ratio}").width == width


def test_aspect_table() -> None:
    assert size_for_aspect("1:1") == (1024, 1024)
    assert size_for_aspect("16:9") == (1360, 768)
    assert size_for_aspect("9:16") == (768, 1360)


def test_aspect_sizes_shrink_to_tighter_limits() -> None:
    limits = LimitsSettings(max_side=1024, max_pixels=600_000)
    args = parse("x --ar 16:9", limits)
    assert (args.width, args.height) == (1024, 576)
    assert fit_to_limits(1024, 1024, LIMITS) == (1024, 1024)


def test_size_and_defaults_from_check_args() -> None:
    assert parse("x --size 512X512").width == 512
    assert parse("x --size 2048x2048").height == 2048
    assert parse(f"x --seed {MAX_SEED}").seed == MAX_SEED
    assert parse("x --seed 0").seed == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "",
            EMPTY,
        ),
        (
            "--seed 4",
            EMPTY,
        ),
        ("cat --sead 4", f"--sead is not a flag I know. Did you mean --seed? {FLAGS}"),
        ("cat --stpes 4", f"--stpes is not a flag I know. Did you mean --steps? {FLAGS}"),
        ("cat --quality 2", f"--quality is not a flag I know. {FLAGS}"),
        (
            "cat --seed abc",
            '--seed must be a whole number from 0 to 4294967295, e.g. --seed 42 (got "abc").',
        ),
        ("cat --seed 1.5", '--seed must be a whole number from 0 to 4294967295, e.g. --seed 42 (got "1.5").'),
        (
            "cat --seed -1",
            "--seed -1 is out of range: use a whole number from 0 to 4294967295, e.g. --seed 42.",
        ),
        (
            "cat --seed 4294967296",
            "--seed 4294967296 is out of range: use a whole number from 0 to 4294967295, e.g. --seed 42.",
        ),
        ("cat --seed", "--seed needs a value: write --seed N, e.g. --seed 42."),
        ("cat --steps many", '--steps must be a whole number, e.g. --steps 28 (got "many").'),
        ("cat --steps 0", "--steps 0 is out of range: use a whole number from 1 to 50, e.g. --steps 28."),
        ("cat --steps 51", "--steps 51 is out of range: use a whole number from 1 to 50, e.g. --steps 28."),
        (
            "cat --ar 5:7",
            "--ar 5:7 is not a ratio I know. Use one of 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3, "
            "or give an exact size with --size WxH (e.g. --size 1152x896).",
        ),
        ("cat --ar", "--ar needs a value: write --ar W:H, e.g. --ar 16:9."),
        ("cat --ar 1:1 --size 512x512", "Use either --ar W:H or --size WxH, not both."),
        (
            "cat --size big",
            '--size must be written as WIDTHxHEIGHT in pixels, e.g. --size 1024x768 (got "big").',
        ),
        (
            "cat --size 1000x760",
            "--size 1000x760: width and height must be multiples of 16; the nearest is --size 1008x768.",
        ),
        (
            "cat --size 128x1024",
            "--size 128x1024 is out of range: each side must be from 256 to 2048 pixels, "
            "e.g. --size 1024x768.",
        ),
        (
            "cat --size 4096x1024",
            "--size 4096x1024 is out of range: each side must be from 256 to 2048 pixels, "
            "e.g. --size 1024x768.",
        ),
        ("cat --no", "--no needs a value: write --no <things to leave out>, e.g. --no text, watermark."),
        ("cat --seed 1 --seed 2", "--seed is given twice; keep one (--seed N)."),
    ],
)
def test_bad_input_gets_a_friendly_message(text: str, message: str) -> None:
    assert error_of(text) == message


def test_size_over_the_pixel_budget() -> None:
    limits = LimitsSettings(max_pixels=1024 * 1024)
    assert error_of("cat --size 2048x1024", limits) == (
        "--size 2048x1024 is too large: width x height may be at most 1048576 pixels (e.g. --size 1024x1024)."
    )


def test_over_long_prompt_and_negative() -> None:
    limits = LimitsSettings(max_prompt_length=10, max_negative_prompt_length=5)
    assert error_of("a" * 11, limits) == (
        "Your prompt is 11 characters long; the limit is 10. Shorten it and try again."
    )
    assert error_of("a cat --no blurry", limits) == (
        "The --no text is 6 characters long; the limit is 5. Shorten it and try again."
    )
    assert parse("a" * 10, limits).prompt == "a" * 10


def test_with_options_merges_typed_options() -> None:
    parsed = parse("a fox --no blur")
    merged = with_options(parsed, LIMITS, seed=9, steps=12, aspect="3:2", negative_prompt="blur")
    assert merged == ImagineArgs("a fox", "blur", 9, 12, 1248, 832)
    assert with_options(parse("a fox --seed 9"), LIMITS, seed=9).seed == 9


def test_with_options_refuses_disagreement() -> None:
    with pytest.raises(
        InvalidRequest, match=r"^The seed option \(9\) and --seed in the prompt \(8\) disagree"
    ):
        with_options(parse("a fox --seed 8"), LIMITS, seed=9)
    with pytest.raises(InvalidRequest, match=r"^The aspect option 1:1 and the size in the prompt"):
        with_options(parse("a fox --ar 16:9"), LIMITS, aspect="1:1")
    with pytest.raises(InvalidRequest, match=r"^--steps 99 is out of range"):
        check_args(with_options(parse("a fox"), LIMITS, steps=99), LIMITS)


def test_check_args_validates_arguments_built_directly() -> None:
    with pytest.raises(InvalidRequest, match=r"^Give both width and height"):
        check_args(ImagineArgs("x", width=512), LIMITS)
    with pytest.raises(InvalidRequest, match=r"^--seed -5 is out of range"):
        check_args(ImagineArgs("x", seed=-5), LIMITS)
    assert check_args(ImagineArgs("  x  ", negative_prompt=" y "), LIMITS) == ImagineArgs("x", "y")


def test_n_and_strength_are_read_and_left_to_the_service_to_check() -> None:
    args = read_imagine("a fox --n 4 --strength 0.6", LIMITS)
    assert (args.prompt, args.count, args.strength) == ("a fox", 4, 0.6)
    # Out of range is the service's to refuse (with the operator's limits), not the reader's.
    assert read_imagine("a fox --n 9 --strength 3", LIMITS).count == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --n four", '--n must be a whole number, e.g. --n 4 (got "four").'),
        (
            "a fox --strength lots",
            '--strength must be a number from 0.1 to 1.0, e.g. --strength 0.6 (got "lots").',
        ),
        (
            "a fox --strength nan",
            '--strength must be a number from 0.1 to 1.0, e.g. --strength 0.6 (got "nan").',
        ),
    ],
)
def test_unreadable_n_and_strength_say_how_to_write_them(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        read_imagine(text, LIMITS)
    assert str(refused.value) == message


def test_typed_options_and_flags_for_n_must_agree() -> None:
    with pytest.raises(InvalidRequest, match="The n option"):
        with_options(read_imagine("a fox --n 2", LIMITS), LIMITS, count=3)
    assert with_options(read_imagine("a fox", LIMITS), LIMITS, count=3, strength=0.5).count == 3
