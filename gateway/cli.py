"""The `gateway` command: serve, keys, budgets, credits, users, db, config."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable

if not __package__:  # run as a file, as gunicorn's USR2 upgrade re-runs `python .../gateway/cli.py serve ...`:
    # Python put gateway/ first on sys.path, where gateway/mcp hides the mcp SDK; the folder holding the
    # package takes its place, so every import below means what it does under `python -m gateway.cli`.
    sys.path.remove(os.path.dirname(os.path.realpath(__file__)))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from gateway import db
from gateway.accounting import admin_service, credits, keys
from gateway.accounting.admin_service import BudgetSpec, KeySpec, micro_or_none
from gateway.accounting.guardrail_names import encode_names
from gateway.accounting.mcp_allow_list import encode_allow_list, parse_labels
from gateway.config import ConfigError, Settings, find_config_file, load_settings
from gateway.dashboard import users
from gateway.errors import GatewayError, InvalidRequest

MCP_SERVERS_HELP = "built-in MCP servers the key may use, e.g. time,docs (default: all its scope allows)"
MAX_STREAMS_HELP = "streams the key may have open at once, per worker process (default: from capacity)"
PERIODS = ("daily", "weekly", "monthly")
LIMIT_RESET_HELP = "the spend limit's period (UTC): daily, weekly or monthly (default: lifetime)"
GUARDRAIL_HELP = "a [guardrails.NAME] of the config applied to the key's requests (repeat for several)"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one subcommand; config errors exit 2 with one line."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.run(args, settings) or 0
    except ConfigError as exc:  # `gateway serve` reloads settings with its flags applied
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"gateway: {exc.message}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; each leaf sets `run`."""
    config_help = "TOML config file (default: $GATEWAY_CONFIG, else ./config.toml)"
    parser = argparse.ArgumentParser(prog="gateway")
    parser.add_argument("--config", help=config_help)
    common = argparse.ArgumentParser(add_help=False)  # lets --config follow any subcommand too
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run the gateway under gunicorn")
    for flag, kind in (("--host", str), ("--port", int), ("--workers", int), ("--threads", int)):
        serve.add_argument(flag, type=kind)
    serve.set_defaults(run=run_serve)

    add_keys_commands(commands, common)
    add_budgets_commands(commands, common)
    credits = commands.add_parser("credits", help="manage credits").add_subparsers(dest="action", required=True)
    grant = credits.add_parser("grant", parents=[common], help="grant credits to an account")
    grant.add_argument("id", type=int, help="account id")
    grant.add_argument("amount", help="credits, e.g. 25 or 0.5")
    grant.add_argument("--expires-in-days", type=float)
    grant.add_argument("--source", default="grant")
    grant.set_defaults(run=with_database(run_credits_grant))

    add_users_commands(commands, common)
    database = commands.add_parser("db", help="database maintenance").add_subparsers(dest="action", required=True)
    upgrade = database.add_parser("upgrade", parents=[common], help="apply pending migrations")
    upgrade.set_defaults(run=run_db_upgrade)

    config = commands.add_parser("config", help="configuration").add_subparsers(dest="action", required=True)
    show = config.add_parser("show", parents=[common], help="print the effective config as TOML, secrets masked")
    show.set_defaults(run=run_config_show)
    return parser


def add_keys_commands(commands, common: argparse.ArgumentParser) -> None:
    """`gateway keys create|update|list|revoke`."""
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", parents=[common], help="create a key (secret shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--account", type=int, help="join this account instead of creating one")
    create.add_argument("--credits", help="grant this many credits to the account (0: no grant)")
    create.add_argument("--tier", choices=["free", "premium", "enterprise", "internal"], default="free")
    create.add_argument("--scope", help="profile scope the account may use")
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--spend-limit", help="credits this key may spend (OpenRouter's key limit)")
    create.add_argument("--limit-reset", choices=PERIODS, help=LIMIT_RESET_HELP)
    create.add_argument("--max-streams", type=int, help=MAX_STREAMS_HELP)
    create.add_argument("--mcp-servers", type=parse_labels, help=MCP_SERVERS_HELP)
    create.add_argument("--guardrail", action="append", dest="guardrails", metavar="NAME", help=GUARDRAIL_HELP)
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(run=with_database(run_keys_create))
    update = keys.add_parser("update", parents=[common], help="change a key's limits, MCP allow-list or guardrails")
    update.add_argument("id", type=int)
    update.add_argument("--rpm", type=int)
    update.add_argument("--tpm", type=int)
    update.add_argument("--max-streams", type=int, help=MAX_STREAMS_HELP)
    update.add_argument("--spend-limit", help="credits this key may spend in its period")
    update.add_argument("--limit-reset", choices=(*PERIODS, "none"), default=argparse.SUPPRESS,
                        help=LIMIT_RESET_HELP + "; `none`: lifetime")
    update.add_argument("--mcp-servers", type=parse_labels, default=argparse.SUPPRESS,
                        help=MCP_SERVERS_HELP + "; `none` lifts it")
    update.add_argument("--guardrail", action="append", dest="guardrails", metavar="NAME", default=argparse.SUPPRESS,
                        help=GUARDRAIL_HELP + "; the key's list becomes these")
    update.add_argument("--no-guardrails", action="store_const", const=[], dest="guardrails",
                        default=argparse.SUPPRESS, help="the key has no guardrails of its own")
    update.add_argument("--json", action="store_true", help="print the key as one JSON object")
    update.set_defaults(run=with_database(run_keys_update))
    listing = keys.add_parser("list", parents=[common], help="list keys")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=with_database(run_keys_list))
    revoke = keys.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(run=with_database(run_keys_revoke))


def add_budgets_commands(commands, common: argparse.ArgumentParser) -> None:
    """`gateway budgets create|update|list|delete`: an account's budget, a key's for one model, a tag's."""
    group = commands.add_parser("budgets", help="manage budgets").add_subparsers(dest="action", required=True)
    create = group.add_parser("create", parents=[common], help="set a budget on an account, a key's model or a tag")
    create.add_argument("--account", type=int, required=True)
    create.add_argument("--amount", required=True, help="credits per period")
    create.add_argument("--period", choices=PERIODS, help="daily, weekly or monthly in UTC (default: lifetime)")
    create.add_argument("--key", type=int, help="with --model: that key's spend on the model")
    create.add_argument("--model", help="a public model id")
    create.add_argument("--tag", help="every key of the account, on requests that carry this tag")
    create.add_argument("--json", action="store_true", help="print the budget as one JSON object")
    create.set_defaults(run=with_database(run_budgets_create))
    update = group.add_parser("update", parents=[common], help="change a budget's amount or period")
    update.add_argument("id", type=int)
    update.add_argument("--amount", help="credits per period")
    update.add_argument("--period", choices=(*PERIODS, "none"), help="`none`: lifetime")
    update.add_argument("--json", action="store_true", help="print the budget as one JSON object")
    update.set_defaults(run=with_database(run_budgets_update))
    listing = group.add_parser("list", parents=[common], help="list budgets with their spend this period")
    listing.add_argument("--account", type=int)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=with_database(run_budgets_list))
    delete = group.add_parser("delete", parents=[common], help="remove a budget")
    delete.add_argument("id", type=int)
    delete.set_defaults(run=with_database(run_budgets_delete))


def add_users_commands(commands, common: argparse.ArgumentParser) -> None:
    """`gateway users create|list|delete|password`: the dashboard's users."""
    group = commands.add_parser("users", help="dashboard users").add_subparsers(dest="action", required=True)
    add_user = group.add_parser("create", parents=[common], help="create a user (password from a prompt or stdin)")
    add_user.add_argument("--email", required=True)
    add_user.add_argument("--account", type=int, help="the account the user sees (default: a new one)")
    add_user.add_argument("--admin", action="store_true", help="may see every account (the admin pages)")
    add_user.set_defaults(run=with_database(run_users_create))
    list_users = group.add_parser("list", parents=[common], help="list users")
    list_users.add_argument("--json", action="store_true")
    list_users.set_defaults(run=with_database(run_users_list))
    delete_user = group.add_parser("delete", parents=[common], help="delete a user (the account stays)")
    delete_user.add_argument("user", help="email or id")
    delete_user.set_defaults(run=with_database(run_users_delete))
    password = group.add_parser("password", parents=[common],
                                help="set a user's password (from a prompt or stdin); ends all their sessions")
    password.add_argument("user", help="email or id")
    password.set_defaults(run=with_database(run_users_password))


def with_database(command: Callable[[argparse.Namespace], int | None]):
    """Bind and migrate the configured database, then run `command` in a transaction."""

    def run(args: argparse.Namespace, settings: Settings) -> int | None:
        db.bind(settings.database.url)
        db.upgrade()
        with db.database.connection_context(), db.database.atomic():
            return command(args)

    return run


def run_keys_create(args: argparse.Namespace) -> int:
    limits = {"rpm": args.rpm, "tpm": args.tpm, "spend_limit": micro_or_none(args.spend_limit),
              "max_streams": args.max_streams}
    allow_list = None
    if args.mcp_servers is not None:
        allow_list = encode_allow_list(load_settings(args.config), args.mcp_servers, "--mcp-servers")
    guardrails = encode_names(load_settings(args.config), args.guardrails, "--guardrail")
    spec = KeySpec(args.name, args.account, args.tier, args.scope, limits, allow_list, micro_or_none(args.credits) or 0,
                   args.limit_reset, guardrails)
    key, secret = admin_service.create_key(spec, by_operator=True)
    shown = {**admin_service.describe_key(key), "key": secret}
    print(json.dumps(shown) if args.json else f"created key {key.id} for account {key.account_id}: {secret}")
    return 0


def run_keys_list(args: argparse.Namespace) -> int:
    listed = [admin_service.describe_key(key) for key in admin_service.list_keys(newest_first=False)]
    if args.json:
        print(json.dumps(listed))
        return 0
    for key in listed:
        state = "revoked" if key["revoked"] else "active"
        print(f"{key['id']:>5}  {key['prefix']}…  account {key['account_id']:<5} {state:<8} {key['name']}")
    return 0


def run_keys_update(args: argparse.Namespace) -> int:
    key = keys.find_key(args.id)
    if "guardrails" in args:  # first: an unknown name is refused before anything changes
        keys.set_guardrails(key, encode_names(load_settings(args.config), args.guardrails, "--guardrail"))
    if "mcp_servers" in args:
        keys.set_mcp_servers(key, encode_allow_list(load_settings(args.config), args.mcp_servers, "--mcp-servers"))
    if "limit_reset" in args:
        admin_service.set_limit_reset(key, None if args.limit_reset == "none" else args.limit_reset)
    limits = {name: getattr(args, name) for name in ("rpm", "tpm", "max_streams") if getattr(args, name) is not None}
    if args.spend_limit is not None:
        limits["spend_limit"] = micro_or_none(args.spend_limit)
    if limits:
        admin_service.set_key_limits(key, limits, by_operator=True)
    shown = admin_service.describe_key(key)
    print(json.dumps(shown) if args.json else f"updated key {key.id}: mcp_servers {shown['mcp_servers']}, "
          f"guardrails {shown['guardrails']}, "
          f"rpm {shown['rpm']}, tpm {shown['tpm']}, max_streams {shown['max_streams']}, "
          f"spend_limit {shown['spend_limit']} ({shown['limit_reset'] or 'lifetime'})")
    return 0


def run_keys_revoke(args: argparse.Namespace) -> int:
    keys.revoke_key(args.id)
    print(f"revoked key {args.id}")
    return 0


def print_budget(row, as_json: bool, verb: str) -> None:
    """One budget as JSON, or as a line: what it caps, its spend this period and when it resets."""
    shown = admin_service.describe_budget(row)
    if as_json:
        print(json.dumps(shown))
        return
    resets = f"resets {shown['resets_at']}" if shown["resets_at"] else "never resets"
    print(f"{verb}budget {shown['id']} (account {shown['account_id']}): {shown['description']}; "
          f"spent {shown['spent']}, {resets}")


def run_budgets_create(args: argparse.Namespace) -> int:
    spec = BudgetSpec(args.account, credits.to_micro(args.amount), args.period, args.key, args.model, args.tag)
    print_budget(admin_service.create_budget(spec, load_settings(args.config).models), args.json, "created ")
    return 0


def run_budgets_update(args: argparse.Namespace) -> int:
    changes: dict[str, object] = {}
    if args.amount is not None:
        changes["amount"] = credits.to_micro(args.amount)
    if args.period is not None:
        changes["period"] = None if args.period == "none" else args.period
    print_budget(admin_service.update_budget(args.id, changes), args.json, "updated ")
    return 0


def run_budgets_list(args: argparse.Namespace) -> int:
    rows = admin_service.list_budgets(args.account)
    if args.json:
        print(json.dumps([admin_service.describe_budget(row) for row in rows]))
        return 0
    for row in rows:
        print_budget(row, False, "")
    return 0


def run_budgets_delete(args: argparse.Namespace) -> int:
    admin_service.delete_budget(args.id)
    print(f"deleted budget {args.id}")
    return 0


def run_credits_grant(args: argparse.Namespace) -> int:
    grant = admin_service.grant(args.id, credits.to_micro(args.amount), args.expires_in_days, args.source)
    balance = credits.summarize(keys.find_account(args.id)).balance
    print(f"granted {args.amount} credits to account {args.id} (grant {grant.id}); "
          f"balance {credits.to_credits(balance)}")
    return 0


def read_password() -> str:
    """A new password: asked twice at a terminal, else the first line of stdin."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat the password: ") != password:
        raise InvalidRequest("The passwords differ.")
    return password


def run_users_create(args: argparse.Namespace) -> int:
    account = keys.find_account(args.account) if args.account is not None else None
    user = users.create_user(args.email, read_password(), account, "admin" if args.admin else "member")
    print(f"created {user.role} {user.email} (user {user.id}, account {user.account_id}); "
          "sign in at /dashboard/login")
    return 0


def run_users_list(args: argparse.Namespace) -> int:
    listed = [users.describe_user(user) for user in users.list_users()]
    if args.json:
        print(json.dumps(listed))
        return 0
    for user in listed:
        print(f"{user['id']:>5}  {user['role']:<7} account {user['account_id']:<5} {user['email']}")
    return 0


def run_users_delete(args: argparse.Namespace) -> int:
    user = users.delete_user(args.user)
    print(f"deleted user {user.id} ({user.email}); account {user.account_id} and its keys stay")
    return 0


def run_users_password(args: argparse.Namespace) -> int:
    user = users.find_user(args.user)
    users.set_password(user, read_password())
    print(f"set the password of user {user.id} ({user.email}); every session of theirs is signed out")
    return 0


def run_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    applied = db.migrate(settings.database.url)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def run_config_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print the settings `gateway serve` would use: a base to copy into a config file."""
    from gateway.config_text import settings_as_toml
    from gateway.guardrails import attachments

    config_file = find_config_file(args.config, dict(os.environ))
    if config_file is None:
        source = "the embedded defaults"
    elif settings.embedded:
        source = f"{config_file} over the embedded defaults"
    else:
        source = str(config_file)
    print(f"# Effective configuration: {source}, environment overrides applied, secrets masked (***).")
    print(settings_as_toml(settings), end="")
    for line in attachments.summary_lines(settings):
        print(line)
    return 0


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate (and on embedded defaults show a first key), then run gunicorn (gthread) on the app."""
    from gateway.server import GatewayServer, gunicorn_options, prepare_database

    settings = share_with_workers(args)
    secret = prepare_database(settings)
    if secret is not None:
        print(f"gateway: created your first API key (shown once): {secret}", flush=True)
    GatewayServer(gunicorn_options(settings)).run()
    return 0


def share_with_workers(args: argparse.Namespace) -> Settings:
    """Put the config file and serve flags in the environment workers inherit; return those settings."""
    config_file = find_config_file(args.config, dict(os.environ))
    if config_file is not None:
        os.environ["GATEWAY_CONFIG"] = str(config_file.resolve())
    for name in ("host", "port", "workers", "threads"):
        if getattr(args, name) is not None:
            os.environ[f"GATEWAY_SERVER_{name.upper()}"] = str(getattr(args, name))
    return load_settings(args.config)


if __name__ == "__main__":
    sys.exit(main())
