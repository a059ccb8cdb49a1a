"""`cortex keys ...` and `cortex tls ...`: credentials and certificates, kept in the data dir.

Both work on the files directly (no kernel needed): whoever may read and write the data dir is
the kernel's admin already. A running kernel sees a new or revoked key at its next call.
"""

from __future__ import annotations

import datetime as dt

import click

from ..security.credentials import ACT_AS, KeyStore, parse_expiry
from .terminal import config_option, data_dir_of, data_dir_option, json_option, print_json, print_table


def _when(stamp: float | None) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat(timespec="seconds") if stamp else "-"


def register(cli: click.Group) -> None:
    @cli.group()
    def keys() -> None:
        """API keys: a client calls as key:NAME with `authorization: Bearer <key>`."""

    @keys.command("create")
    @config_option
    @data_dir_option
    @click.argument("name")
    @click.option("--scope", "scopes", multiple=True, metavar="GLOB",
                  help="Methods it may call, 'package.Service/Method' globs (repeatable; default: all). "
                       f"'{ACT_AS}:USER' (a glob, e.g. {ACT_AS}:team-*): it may name that user in x-cortex-principal (a "
                       f"gateway); a bare '{ACT_AS}' any user. Never the owner's identities (default, mcp:*, a2a:*).")
    @click.option("--expires", help="When it stops working: 90m, 12h, 30d, or an RFC 3339 time (default: never).")
    def keys_create(config: str | None, data_dir: str | None, name: str, scopes: tuple[str, ...], expires: str | None) -> None:
        """Create key NAME and print it (once: only its hash is kept)."""
        try:
            until = parse_expiry(expires) if expires else None
            token = KeyStore(data_dir_of(config, data_dir)).create(name, list(scopes), until)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(token)
        click.echo(f"key:{name} created; it is shown only now. Callers send 'authorization: Bearer <key>'.", err=True)

    @keys.command("list")
    @config_option
    @data_dir_option
    @json_option
    def keys_list(config: str | None, data_dir: str | None, as_json: bool) -> None:
        """List keys (names, scopes, expiry; never the keys)."""
        found = KeyStore(data_dir_of(config, data_dir)).list()
        if as_json:
            return print_json([
                {"name": k.name, "principal": k.principal, "scopes": list(k.scopes), "created": _when(k.created),
                 "expires": _when(k.expires), "revoked": _when(k.revoked)} for k in found
            ])
        print_table([[k.principal, ", ".join(k.scopes), _when(k.created), _when(k.expires), _when(k.revoked)] for k in found],
               ["PRINCIPAL", "SCOPES", "CREATED", "EXPIRES", "REVOKED"])

    @keys.command("revoke")
    @config_option
    @data_dir_option
    @click.argument("name")
    def keys_revoke(config: str | None, data_dir: str | None, name: str) -> None:
        """Revoke key NAME: its next call is refused."""
        if not KeyStore(data_dir_of(config, data_dir)).revoke(name):
            raise click.ClickException(f"no key {name!r} that is not already revoked; `cortex keys list` shows them")
        click.echo(f"key:{name} revoked")

    @cli.group()
    def tls() -> None:
        """A local certificate authority: TLS and mutual TLS for kernels and clients."""

    @tls.command("init")
    @config_option
    @data_dir_option
    @click.option("--host", "hosts", multiple=True, help="A name or address clients use for this kernel (repeatable).")
    def tls_init(config: str | None, data_dir: str | None, hosts: tuple[str, ...]) -> None:
        """Make a CA (once) and this kernel's certificate; print the settings that use them."""
        folder = data_dir_of(config, data_dir)
        try:
            from ..security.tls import init_ca  # (cryptography's x509 costs the other commands 0.4 s)

            made = init_ca(folder, list(hosts))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"CA:          {made['ca']}  (copy it to clients; keep ca.key private)")
        click.echo(f"certificate: {made['cert']}  (localhost, 127.0.0.1, ::1{''.join(', ' + h for h in hosts)})")
        click.echo("\nAdd to cortex.toml:\n")
        click.echo("[kernel]")
        click.echo(f'tls_cert = "{made["cert"]}"')
        click.echo(f'tls_key = "{made["key"]}"')
        click.echo(f'tls_client_ca = "{made["ca"]}"   # mutual TLS: certificates from `cortex tls issue NAME`')
        click.echo("require_credentials = true        # needed to listen beyond loopback")

    @tls.command("issue")
    @config_option
    @data_dir_option
    @click.argument("name")
    def tls_issue(config: str | None, data_dir: str | None, name: str) -> None:
        """Make a client certificate: its holder is node:NAME to kernels trusting this CA."""
        try:
            from ..security.tls import issue_client

            cert, key = issue_client(data_dir_of(config, data_dir), name)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"certificate: {cert}\nkey:         {key}")
        click.echo(f"\nIn the calling kernel's cortex.toml, for a provider at this kernel:\n"
                   f'tls_ca = "<this CA>"\ntls_cert = "{cert}"\ntls_key = "{key}"')
