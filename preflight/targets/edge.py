"""Render, validate and launch the NGINX edge that fronts the API workers."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import stat
import subprocess
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
from cryptography import x509

from preflight.errors import EdgeConfigInvalid, TargetUnavailable
from preflight.targets.pki import Pki
from preflight.targets.web import WEB_DIR, stage_web_client

# preflight/targets/edge.py -> <repo>/system/nginx
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "system" / "nginx"
NGINX_BINARY = shutil.which("nginx") or "/usr/sbin/nginx"
VALIDATE_TIMEOUT_S = 10.0
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
RENDERED_MARKER = "# rendered by preflight.targets.edge from "
# nginx's own 429/503 bodies tell clients when to come back; the rate buckets refill per second.
RETRY_AFTER_429_S = 1
RETRY_AFTER_503_S = 5

# Values rendered into nginx syntax must not be able to change its structure: no quotes,
# whitespace, ';', braces, '$' or backslashes.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./@%+=:,~-]+$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_SIZE = re.compile(r"^[1-9][0-9]{0,9}[kKmMgG]?$")
_NGINX_LOCATION = re.compile(r" in (?P<file>/\S+):(?P<line>\d+)\s*$")


@dataclass(frozen=True)
class EdgeCertificate:
    """A certificate the edge reads from where another process keeps it (an ACME client's
    output in a container), instead of the run's pki: its paths as NGINX sees them, and the
    names it is for (the file may not exist yet when the configuration is rendered)."""

    chain: Path
    key: Path
    names: tuple[str, ...]


@dataclass(frozen=True)
class EdgeConfig:
    workdir: Path  # where nginx.conf, includes and temp dirs are written
    https_port: int
    http_port: int
    upstreams: Sequence[tuple[str, int]]  # API workers (host, port)
    pki: Pki
    server_name: str = "localhost"
    worker_processes: int = 1
    api_rate_per_s: int = 100
    ws_rate_per_s: int = 50
    max_body: str = "100m"
    # Bursts beyond the rate that are served without delay; see limits/rate.conf for the choice.
    api_burst: int = 50
    ws_burst: int = 25
    # Loopback by default; the containers target listens on all addresses of its own namespace.
    listen_address: str = "127.0.0.1"
    # The web client the edge serves under /app/, with its status page at /status (staged with
    # fingerprinted names by preflight.targets.web); None: system/web.
    web_source: Path | None = None
    # Connections per NGINX worker (a proxied WebSocket takes two: client and upstream) and the
    # file descriptors each worker may open. The shipped values; bench/sockets.py raises them for
    # its run at 10,000 held sockets.
    worker_connections: int = 4096
    worker_rlimit_nofile: int = 8192
    # The certificate an ACME client keeps (None: pki's), and the folder whose
    # .well-known/acme-challenge/ the plain-HTTP server serves for its http-01 challenges.
    certificate: EdgeCertificate | None = None
    acme_webroot: Path | None = None
    # The central log store (host, port) the edge also ships its access and error logs to, over
    # syslog (UDP); None: the local files only.
    log_server: tuple[str, int] | None = None


def render_edge(cfg: EdgeConfig, template_dir: Path | None = None) -> Path:
    """Write <workdir>/nginx/nginx.conf and its includes; return the nginx.conf path."""
    templates = (template_dir or TEMPLATE_DIR).resolve()
    if not (templates / "nginx.conf.j2").is_file():
        raise EdgeConfigInvalid(
            f"{templates}/nginx.conf.j2 is missing; point template_dir at system/nginx"
        )
    run_as_root = os.geteuid() == 0
    workdir = cfg.workdir.resolve()
    nginx_dir = workdir / "nginx"
    temp_dir = nginx_dir / "tmp"
    logs_dir = nginx_dir / "logs"
    context = _context(cfg, nginx_dir, run_as_root)

    for directory in (nginx_dir, temp_dir, logs_dir, *(temp_dir / name for name in TEMP_DIRS)):
        directory.mkdir(parents=True, exist_ok=True)
    stage_web_client((cfg.web_source or WEB_DIR).resolve(), nginx_dir / "web")
    if run_as_root:
        # Workers run as nobody and must reach client_body_temp etc. (nginx chowns the leaf
        # temp dirs itself); with a 0700 dir in the way, bodies over 16 KB fail with 500.
        for directory in (workdir, nginx_dir, temp_dir):
            directory.chmod(0o711)

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        undefined=jinja2.StrictUndefined,
        # nginx syntax, not HTML: HTML escaping would corrupt it. Safety comes from _context(),
        # which only lets validated ints, IPs, DNS names and allow-listed paths through.
        autoescape=False,  # noqa: S701
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    for source in sorted(p for p in templates.rglob("*") if p.suffix in {".conf", ".j2"}):
        relative = source.relative_to(templates).as_posix()
        target = nginx_dir / relative.removesuffix(".j2")
        try:
            text = env.get_template(relative).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise EdgeConfigInvalid(
                f"template {source} line {exc.lineno} does not parse: {exc.message}; "
                "fix the Jinja2 syntax there"
            ) from exc
        except jinja2.TemplateError as exc:
            line = _template_line(exc, source)
            raise EdgeConfigInvalid(
                f"template {source} line {line} does not render: {exc}; "
                "use only the variables render_edge provides"
            ) from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"{RENDERED_MARKER}{source}\n{text}", encoding="utf-8")
    return nginx_dir / "nginx.conf"


def validate_edge(conf: Path) -> None:
    """Run `nginx -t` on a rendered config; raise EdgeConfigInvalid naming file, line and fix."""
    command = [NGINX_BINARY, "-t", "-q", "-e", "stderr", "-p", f"{conf.parent}/", "-c", str(conf)]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=VALIDATE_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise TargetUnavailable(
            f"nginx is not installed at {NGINX_BINARY}; apt-get install nginx"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise TargetUnavailable(
            f"`nginx -t` on {conf} did not finish within {VALIDATE_TIMEOUT_S:.0f} s"
        ) from exc
    if result.returncode != 0:
        raise EdgeConfigInvalid(_explain_nginx_error(conf, result.stderr))
    if os.geteuid() == 0:
        # Checked here, not in render_edge: a config rendered for a container is never run by
        # this host's nginx, so only a config about to run here must be reachable from nobody.
        _require_traversable(conf.parent.resolve())


def nginx_command(conf: Path) -> list[str]:
    """The command line that runs nginx in the foreground (the config says `daemon off`)."""
    return [NGINX_BINARY, "-e", "stderr", "-p", f"{conf.parent}/", "-c", str(conf)]


def _context(cfg: EdgeConfig, nginx_dir: Path, run_as_root: bool) -> dict[str, object]:
    for name in ("https_port", "http_port"):
        _require_port(name, getattr(cfg, name))
    if cfg.https_port == cfg.http_port:
        raise EdgeConfigInvalid("EdgeConfig.https_port and http_port must differ")
    if not cfg.upstreams:
        raise EdgeConfigInvalid("EdgeConfig.upstreams is empty; give at least one API worker")
    for name in (
        "worker_processes",
        "api_rate_per_s",
        "ws_rate_per_s",
        "api_burst",
        "ws_burst",
        "worker_connections",
        "worker_rlimit_nofile",
    ):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise EdgeConfigInvalid(f"EdgeConfig.{name} must be a positive int (got {value!r})")
    if not _HOSTNAME.match(cfg.server_name):
        raise EdgeConfigInvalid(
            f"EdgeConfig.server_name must be a DNS name (got {cfg.server_name!r})"
        )
    if not _SIZE.match(cfg.max_body):
        raise EdgeConfigInvalid(
            f"EdgeConfig.max_body must be an nginx size such as 100m (got {cfg.max_body!r})"
        )
    try:
        listen = ipaddress.ip_address(cfg.listen_address)
    except ValueError:
        raise EdgeConfigInvalid(
            f"EdgeConfig.listen_address must be an IP address (got {cfg.listen_address!r})"
        ) from None
    chain, key = _certificate_paths(cfg)
    paths = {
        "pid": nginx_dir / "nginx.pid",
        "error_log": nginx_dir / "logs" / "error.log",
        "access_log": nginx_dir / "logs" / "access.log",
        "temp": nginx_dir / "tmp",
        "web": nginx_dir / "web",
        "server_chain": chain,
        "server_key": key,
    }
    if cfg.acme_webroot is not None:
        paths["acme_webroot"] = cfg.acme_webroot
    for name, path in paths.items():
        if not _SAFE_PATH.match(str(path)):
            raise EdgeConfigInvalid(
                f"{name} path {str(path)!r} has characters nginx syntax cannot carry safely; "
                "use a work dir made of letters, digits and ./_-"
            )
    return {
        "run_as_root": run_as_root,
        "worker_processes": cfg.worker_processes,
        "worker_connections": cfg.worker_connections,
        "worker_rlimit_nofile": cfg.worker_rlimit_nofile,
        "paths": {name: str(path) for name, path in paths.items()},
        "listen": f"[{listen}]" if listen.version == 6 else str(listen),
        "https_port": cfg.https_port,
        "https_port_suffix": "" if cfg.https_port == 443 else f":{cfg.https_port}",
        "http_port": cfg.http_port,
        "server_name": cfg.server_name,
        "redirect_hosts": _names(cfg),
        "acme": cfg.acme_webroot is not None,
        "upstreams": [_upstream(host, port) for host, port in cfg.upstreams],
        "log_server": _upstream(*cfg.log_server, "log_server") if cfg.log_server else None,
        "api_rate_per_s": cfg.api_rate_per_s,
        "ws_rate_per_s": cfg.ws_rate_per_s,
        "api_burst": cfg.api_burst,
        "ws_burst": cfg.ws_burst,
        "max_body": cfg.max_body,
        "retry_after_429": RETRY_AFTER_429_S,
        "retry_after_503": RETRY_AFTER_503_S,
    }


def _certificate_paths(cfg: EdgeConfig) -> tuple[Path, Path]:
    """The chain and key NGINX serves: the ACME client's where given, else the run's pki's."""
    if cfg.certificate is not None:
        return cfg.certificate.chain, cfg.certificate.key
    return cfg.pki.server_chain.resolve(), cfg.pki.server_key.resolve()


def _names(cfg: EdgeConfig) -> list[str]:
    """The names the served certificate covers (the redirects' allowed hosts)."""
    if cfg.certificate is None:
        return _certificate_names(cfg.pki)
    for name in cfg.certificate.names:
        if not _HOSTNAME.match(name):
            raise EdgeConfigInvalid(f"EdgeCertificate.names must be DNS names (got {name!r})")
    return [name.lower() for name in cfg.certificate.names]


def _certificate_names(pki: Pki) -> list[str]:
    """The names the edge certificate covers, as they appear in $host; redirects keep only these."""
    try:
        leaf = x509.load_pem_x509_certificates(pki.server_chain.read_bytes())[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound) as exc:
        raise EdgeConfigInvalid(
            f"cannot read the SAN of {pki.server_chain} ({exc}); regenerate it with make_pki"
        ) from exc
    names = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    for name in names:
        if not _HOSTNAME.match(name):
            raise EdgeConfigInvalid(f"{pki.server_chain} names {name!r}, not a plain DNS name")
    for ip in san.get_values_for_type(x509.IPAddress):
        names.append(f"[{ip}]" if ip.version == 6 else str(ip))
    return names


def _require_port(name: str, port: object) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise EdgeConfigInvalid(f"EdgeConfig.{name} must be a port 1-65535 (got {port!r})")


def _upstream(host: str, port: int, what: str = "upstreams") -> str:
    """host:port as NGINX writes an address (`what`: the EdgeConfig field, for the error)."""
    _require_port(f"{what} port", port)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise EdgeConfigInvalid(
                f"EdgeConfig.{what} host must be an IP address or DNS name (got {host!r})"
            ) from None
        return f"{host}:{port}"
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _require_traversable(workdir: Path) -> None:
    for directory in (workdir, *workdir.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise EdgeConfigInvalid(
                f"{directory} (mode {stat.S_IMODE(mode):04o}) cannot be traversed by the nginx "
                f"workers (user nobody), so request bodies over 16 KB would fail with 500; "
                f"chmod 0711 it (tempfile.mkdtemp() creates 0700 dirs)"
            )


def _template_line(exc: BaseException, source: Path) -> int | str:
    # Jinja2 rewrites tracebacks so template frames carry the template's file and line.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(source)]
    return frames[-1].lineno if frames and frames[-1].lineno is not None else "?"


def _explain_nginx_error(conf: Path, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reported = next((line for line in lines if "[emerg]" in line or "[crit]" in line), None)
    if reported is None:
        return f"`nginx -t` rejected {conf}: {stderr.strip() or 'no output'}"
    detail = re.sub(r"^\d+#\d+: ", "", reported.split("] ", 1)[-1])  # drop "pid#tid: "
    where = _NGINX_LOCATION.search(detail)
    if where is None:
        return f"`nginx -t` rejected {conf}: {detail}"
    rendered = Path(where["file"])
    detail = detail[: where.start()]
    template = _template_of(rendered)
    fix = f"fix the template {template}" if template else f"fix {rendered}"
    return (
        f"`nginx -t` rejected {rendered} line {where['line']}: {detail}; "
        f"{fix} (that line, counted in the rendered file) and render again"
    )


def _template_of(rendered: Path) -> str | None:
    try:
        with rendered.open(encoding="utf-8") as f:
            first = f.readline().rstrip("\n")
    except OSError:
        return None
    return first.removeprefix(RENDERED_MARKER) if first.startswith(RENDERED_MARKER) else None
