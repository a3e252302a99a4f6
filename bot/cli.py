"""The `majicbot` command: run the bot, check the machine and the config, manage the database and models.

Each subcommand loads the configuration first, so a bad file fails the same way everywhere, then imports
only what it needs (the chat side never imports torch; `download` imports modelscope on demand).

An expected failure (a bad config, a database that cannot be opened, a missing package or model file,
a token the platform refuses, the network) ends with one or two lines saying what is wrong and what to
do, and no traceback; `--log-level DEBUG` adds the traceback. Anything else is a bug: one line, and the
traceback with DEBUG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from bot.config import Config, ConfigError, load_config, masked_dump, resolve_config_path
from bot.log_setup import configure_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def version() -> str:
    try:
        return metadata.version("majicbot")
    except metadata.PackageNotFoundError:
        return "unknown (not installed as a package)"


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    log_format = args.log_format or config.logging.format
    configure_logging(
        args.log_level or config.logging.level,
        config.secrets(),
        json_lines=log_format == "json",
        noisy_loggers=[name for platform in config.platforms for name in platform.noisy_loggers],
    )
    return config


# -- subcommands -----------------------------------------------------------------------------------
def _config_check(args: argparse.Namespace) -> int:
    config = _load(args)
    print(json.dumps(masked_dump(config), indent=2))
    path, _ = resolve_config_path(args.config)
    if path.exists():
        print(f"config OK: read {path.resolve()}", file=sys.stderr)
    else:
        print(
            f"no config file found ({path} does not exist and MAJICBOT_CONFIG is not set): "
            "showing the defaults (with tokens from the environment). "
            "Copy config.example.toml to config.toml to change them.",
            file=sys.stderr,
        )
    return EXIT_OK


def _db_upgrade(args: argparse.Namespace) -> int:
    from storage.database import Database
    from storage.database_errors import explained_database_errors, shown_url

    config = _load(args)
    url = config.storage.database_url

    async def upgrade() -> None:
        database = Database(url, busy_timeout_ms=config.storage.busy_timeout_ms)
        try:
            await database.upgrade()
        finally:
            await database.close()

    with explained_database_errors(url):
        asyncio.run(upgrade())
    print(f"database at {shown_url(url)} is up to date")
    return EXIT_OK


def _download(args: argparse.Namespace) -> int:
    from bot.download_display import transfer_display
    from models.download import DownloadProgress, download_models

    config = _load(args)

    def on_repo(progress: DownloadProgress) -> None:
        print(
            f"[{progress.index}/{progress.total}] {progress.repo_id}: {', '.join(progress.patterns)} "
            f"-> {progress.local_dir}",
            file=sys.stderr,
            flush=True,
        )

    contacted = download_models(config.engine.model_dir, on_repo, on_file=transfer_display(sys.stderr))
    if not contacted:
        print(f"every model file is already in {config.engine.model_dir}", file=sys.stderr)
    return _models_check(args)


def _models_check(args: argparse.Namespace) -> int:
    from models.check import check_models

    config = _load(args)
    report = check_models(config.engine.model_dir)
    print(report.render())
    return EXIT_OK if report.complete else EXIT_FAILURE


def _doctor(args: argparse.Namespace) -> int:
    from bot.doctor import CheckResult, Doctor

    config = _load(args)
    doctor = Doctor(config, check_engine=not args.no_engine, check_chat=not args.no_chat)

    def report(result: CheckResult) -> None:
        print(result.render(), flush=True)

    healthy = asyncio.run(doctor.run(report))
    print("all checks passed" if healthy else "some checks failed: see the fixes above")
    return EXIT_OK if healthy else EXIT_FAILURE


def _run(args: argparse.Namespace, *, with_engine: bool, with_chat: bool) -> int:
    from bot.app import Application
    from storage.database_errors import explained_database_errors

    config = _load(args)
    devices = getattr(args, "devices", None)
    # One engine (its own worker process and claimer name) per device, in one process and event loop.
    applications = [
        Application(for_device, with_engine=with_engine, with_chat=with_chat)
        for for_device in ([config] if not devices else [with_device(config, device) for device in devices])
    ]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        runs = [asyncio.create_task(application.run(stop)) for application in applications]
        try:
            # One engine failing stops the others too: a half-running host is harder to notice.
            await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()
            results = await asyncio.gather(*runs, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    with explained_database_errors(config.storage.database_url):
        asyncio.run(main())
    return EXIT_OK


def _generate(args: argparse.Namespace) -> int:
    import dataclasses

    from tqdm import tqdm

    from bot import derived_jobs
    from bot.command_parser import parse_imagine
    from bot.input_images import check_input_image
    from bot.load_bar import LoadBar
    from bot.request_rules import resolve_request
    from engine.backend import preflight
    from engine.generate import generate_images
    from engine.messages import StepProgress

    config = _load(args)
    # The prompt and the options go through the /imagine parser and limits, as in a chat.
    image_args = parse_imagine(imagine_text(args), config.limits)
    count = derived_jobs.check_count(args.n, config.limits)
    input_png: bytes | None = None
    strength = None
    if args.strength is not None and args.image is None:
        raise CommandError("--strength goes with --image PATH: the image to start from")
    if args.image is not None:
        try:
            sent = args.image.read_bytes()
        except OSError as error:
            raise CommandError(f"cannot read {args.image} ({error.strerror}); check the path") from None
        checked = check_input_image(sent, config.limits)
        input_png = checked.png
        image_args = derived_jobs.image_prompt_args(image_args, checked, config.limits)
        strength = derived_jobs.check_strength(
            args.strength if args.strength is not None else config.variations.image_prompt_strength
        )
    request = dataclasses.replace(
        resolve_request(image_args, config.limits, config.engine), count=count, strength=strength
    )
    preflight(config.engine)
    outputs = _outputs(args.output or Path(f"majicbot-{request.seed}.png"), count)
    source = "" if input_png is None else f", from {args.image} at strength {strength:g}"
    print(
        f"seed {request.seed}, {request.steps} steps, {count} x {request.width}x{request.height}{source}; "
        "loading the model…",
        file=sys.stderr,
    )
    with LoadBar() as load_bar, tqdm(total=request.total_steps, unit="step", file=sys.stderr) as bar:

        def on_progress(progress: StepProgress) -> None:
            load_bar.close()
            bar.update(progress.step - bar.n)

        pngs = asyncio.run(
            generate_images(
                config.engine,
                request,
                on_progress,
                input_image=input_png,
                on_load_progress=load_bar.report,
            )
        )
    for output, png in zip(outputs, pngs, strict=True):
        try:
            output.write_bytes(png)
        except OSError as error:
            raise CommandError(
                f"cannot write {output} ({error.strerror}); choose another path with -o"
            ) from None
        print(f"wrote {output}")
    return EXIT_OK


def _outputs(path: Path, count: int) -> list[Path]:
    """Where the images go: `path` for one; name-1.png, name-2.png, ... for several."""
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{index}{path.suffix or '.png'}") for index in range(1, count + 1)]


def parse_devices(text: str) -> list[str]:
    """`0,1` -> cuda:0, cuda:1; other names (cuda:2, cpu) are taken as they are."""
    devices = [part.strip() for part in text.split(",") if part.strip()]
    if not devices:
        raise argparse.ArgumentTypeError("give at least one device, e.g. --devices 0,1")
    named = [f"cuda:{device}" if device.isdigit() else device for device in devices]
    if len(set(named)) != len(named):
        raise argparse.ArgumentTypeError(f"{text}: a device is named twice")
    return named


def with_device(config: Config, device: str) -> Config:
    return config.model_copy(update={"engine": config.engine.model_copy(update={"device": device})})


def imagine_text(args: argparse.Namespace) -> str:
    """The prompt with the command-line options written as /imagine flags (so one parser reads both)."""
    words = [args.prompt]
    size = args.size
    if (args.width is None) != (args.height is None):
        raise CommandError("give both --width and --height, or --size WxH")
    if args.width is not None:
        if size is not None:
            raise CommandError("use either --size or --width/--height, not both")
        size = f"{args.width}x{args.height}"
    for flag, value in (("seed", args.seed), ("steps", args.steps), ("ar", args.ar), ("size", size)):
        if value is not None:
            words.append(f"--{flag} {value}")
    if args.negative:
        words.append(f"--no {args.negative}")
    return " ".join(words)


class CommandError(Exception):
    """A command-line mistake; the text says how to write it."""


# -- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $MAJICBOT_CONFIG, else ./config.toml)",
    )
    common.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=None,
        help="DEBUG also prints the traceback of a failure",
    )
    common.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="json: one object per line (log collectors)",
    )

    parser = argparse.ArgumentParser(prog="majicbot", description="Chat bot for local FLUX image generation.")
    parser.add_argument("--version", action="version", version=f"majicbot {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run the engine and the configured chat adapters")
    run.set_defaults(handler=lambda a: _run(a, with_engine=not a.no_engine, with_chat=True))
    run.add_argument(
        "--no-engine",
        action="store_true",
        help="chat adapters only; engine hosts sharing the database run the jobs",
    )
    engine = commands.add_parser(
        "engine", parents=[common], help="run only the GPU engine and its claim loop (an extra GPU host)"
    )
    engine.set_defaults(handler=lambda a: _run(a, with_engine=True, with_chat=False))
    engine.add_argument(
        "--devices",
        type=parse_devices,
        default=None,
        metavar="LIST",
        help="one engine per GPU, e.g. 0,1 (cuda:0 and cuda:1) or cuda:0,cuda:2; default: engine.device",
    )

    generate = commands.add_parser(
        "generate",
        parents=[common],
        help="make one image from the command line",
        description='Make one image. The prompt takes the flags of /imagine: "a fox --ar 16:9 --seed 7".',
    )
    generate.add_argument("prompt", help='what to draw, with optional /imagine flags ("a fox --ar 16:9")')
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("--steps", type=int, default=None)
    generate.add_argument("--ar", default=None, metavar="W:H", help="aspect ratio, e.g. 16:9")
    generate.add_argument("--size", default=None, metavar="WxH", help="exact size, e.g. 1024x768")
    generate.add_argument("--width", type=int, default=None, help="with --height: the same as --size")
    generate.add_argument("--height", type=int, default=None)
    generate.add_argument("--no", "--negative", dest="negative", default="", help="negative prompt")
    generate.add_argument("--n", type=int, default=None, help="how many images (consecutive seeds)")
    generate.add_argument("--image", type=Path, default=None, help="an image to start from (PNG, JPEG, WebP)")
    generate.add_argument(
        "--strength", type=float, default=None, help="with --image: 0.1 (keep it) to 1.0 (only its idea)"
    )
    generate.add_argument(
        "-o", "--output", type=Path, default=None, help="PNG to write (name-1.png, ... for --n)"
    )
    generate.set_defaults(handler=_generate)

    download = commands.add_parser(
        "download", parents=[common], help="fetch the model files from ModelScope (resumes)"
    )
    download.set_defaults(handler=_download)

    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="check this machine: Python, torch, GPU, memory, disk, models, database, tokens",
    )
    doctor.add_argument(
        "--no-engine", action="store_true", help="a chat-only host: skip GPU, memory and models"
    )
    doctor.add_argument("--no-chat", action="store_true", help="an engine-only host: skip the chat tokens")
    doctor.set_defaults(handler=_doctor)

    models = commands.add_parser("models", help="model files")
    models_commands = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    models_commands.add_parser(
        "check", parents=[common], help="which model files are present and recognised"
    ).set_defaults(handler=_models_check)

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    config_commands.add_parser(
        "check", parents=[common], help="validate and print the effective config, secrets masked"
    ).set_defaults(handler=_config_check)

    db = commands.add_parser("db", help="database")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_commands.add_parser("upgrade", parents=[common], help="apply database migrations").set_defaults(
        handler=_db_upgrade
    )
    return parser


def _expected_failures() -> tuple[type[BaseException], ...]:
    """Exceptions whose text is already what an operator should read."""
    from bot.app import ApplicationError
    from bot.errors import UserFacingError
    from bot.frontend import FrontendStartError
    from bot.metrics import MetricsUnavailable
    from engine.errors import EngineError
    from models.check import ModelFilesMissing
    from models.download import DownloadFailed, DownloadUnavailable
    from storage.database_errors import DatabaseUnavailable

    return (
        CommandError,
        UserFacingError,
        FrontendStartError,
        ApplicationError,
        EngineError,
        ModelFilesMissing,
        DownloadFailed,
        DownloadUnavailable,
        DatabaseUnavailable,
        MetricsUnavailable,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `majicbot` console script."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    debug = args.log_level == "DEBUG"
    try:
        return handler(args)
    except ConfigError as error:
        print(f"majicbot: invalid configuration in {error}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("majicbot: interrupted (a download resumes where it stopped when run again)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if debug:
            traceback.print_exc()
        if isinstance(error, _expected_failures()):
            print(f"majicbot: {error}", file=sys.stderr)
        elif isinstance(error, OSError) and error.strerror:
            where = f" ({error.filename})" if error.filename else ""
            print(f"majicbot: {error.strerror}{where}", file=sys.stderr)
        else:
            print(
                f"majicbot: unexpected error: {type(error).__name__}: {error}. This is a bug; run again with "
                "--log-level DEBUG for the traceback and report it.",
                file=sys.stderr,
            )
        return EXIT_FAILURE
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
