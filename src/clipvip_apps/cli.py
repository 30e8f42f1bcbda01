"""``clipvip`` command line. Each sub-command lives in ``clipvip_apps/commands/<name>.py`` and exposes
``register(subparsers)``; its handler is set with ``parser.set_defaults(func=...)`` and returns an exit code. A
resumable command also sets ``on_interrupt`` (what to tell the user after Ctrl-C). Errors are turned into one line
here, in ``main``, not in every command."""

from __future__ import annotations

import argparse
import copy
import importlib
import logging
import os
import pkgutil
import sys

import clipvip_apps.commands as commands_pkg

log = logging.getLogger(__name__)


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the help already says it: a user should not have to
    read the source to know what an option does when left out. Flags (off unless given) and positionals are left
    as written; descriptions keep their line breaks."""

    _FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction, argparse._VersionAction)

    def _shows_default(self, action: argparse.Action) -> bool:
        return (
            bool(action.option_strings)
            and not action.required
            and not isinstance(action, self._FLAGS)
            and action.default is not argparse.SUPPRESS
        )

    def _format_action(self, action: argparse.Action) -> str:
        if not (action.help and action.help.strip()) and self._shows_default(action):
            action = copy.copy(action)  # an option without help text still gets its default shown
            action.help = self._get_help_string(action)
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not self._shows_default(action) or "default" in text.lower():
            return text
        shown = "none" if action.default in (None, []) else "%(default)s"
        return f"{text} (default: {shown})".strip()


class _Parser(argparse.ArgumentParser):
    """The parser class of every sub-command (and theirs): help with defaults, whatever a command asks for."""

    def __init__(self, *args: object, **kw: object) -> None:
        if kw.get("formatter_class") in (None, argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
            kw["formatter_class"] = DefaultsHelpFormatter
        super().__init__(*args, **kw)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clipvip", description="CLIP-ViP video-text retrieval")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        module.register(sub)
    return parser


# What any error line may echo of the input: a 100 kB query or a multi-page library message is cut here.
MAX_ERROR_CHARS = 400


def one_line(message: object, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message as one line of at most ``limit`` characters (newlines collapsed, the tail cut)."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_model_arg(args: argparse.Namespace) -> None:
    """``--model`` naming a video or an image is a common slip (argument order); say so before any loader tries
    to unpickle it and answers with its own multi-line text."""
    from clipvip.video.read import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    model = getattr(args, "model", None)
    if isinstance(model, str) and os.path.isfile(model):
        suffix = os.path.splitext(model)[1].lower()
        if suffix in VIDEO_EXTENSIONS or suffix in IMAGE_EXTENSIONS:
            raise ValueError(
                f"--model {model}: a {'video' if suffix in VIDEO_EXTENSIONS else 'image'} file, not a checkpoint; "
                "pass a clipvip model folder or a CLIP / CLIP-ViP weights file"
            )


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors (missing or unreadable files, bad values, files in the way) print ONE line
    ``clipvip COMMAND: error: ...`` and exit 2; Ctrl-C prints one line and exits 130 (what a shell reports for
    SIGINT); ``-v`` adds the traceback to the log."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        _check_model_arg(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        hint = getattr(args, "on_interrupt", None)
        print(f"clipvip {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:  # user errors (OSError: files in the way, unreadable, offline hub...)
        log.debug("traceback", exc_info=True)
        print(f"clipvip {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
