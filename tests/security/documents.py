"""Hostile policy documents, written as bytes so that nothing on the way can tidy them up.

Each case is one document a publisher could send a worker, and the words its refusal must
contain (case-insensitively): the answer has to name the problem, not just say "refused".
`version` is the version the document carries; the cases use the worker's next version, so a
refusal cannot be the stale-version one by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from services.contracts.policy_xml import NAMESPACE

NODE = "ha1"
MR = "mr1"

#: The declaration and root every document starts with ({version} and {node} filled in).
_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<policy-message xmlns="{NAMESPACE}" node="{{node}}" mobile-router="{MR}" '
    'direction="downlink" version="{version}">\n'
)
_TAIL = "</policy-message>\n"


def document(body: str, version: int, *, node: str = NODE, head: str = _HEAD) -> bytes:
    """A policy message around `body` (the operation element), UTF-8."""
    return (head.format(version=version, node=node) + body + _TAIL).encode("utf-8")


def policy(policy_id: str, *, port: int = 5001, bid: int = 1, priority: int = 10) -> str:
    """One UDP policy to `port` forwarded to `bid`; `policy_id` written as given (escaped
    only as XML needs, so the parser sees exactly this value)."""
    escaped = (
        policy_id.replace("&", "&amp;")
        .replace('"', "&quot;")
        .replace("<", "&lt;")
        .replace("\n", "&#10;")
    )
    return (
        f'<policy id="{escaped}" priority="{priority}"><selector><next-header>17</next-header>'
        f'<destination-port first="{port}" last="{port}"/></selector>'
        f'<forward bid="{bid}"/></policy>\n'
    )


def install(*policies: str) -> str:
    """An Install operation of the given policies."""
    return "<install>\n" + "".join(policies) + "</install>\n"


def delete(policy_id: str) -> str:
    """An Update deleting `policy_id` (escaped like `policy`)."""
    escaped = policy_id.replace("&", "&amp;").replace('"', "&quot;").replace("\n", "&#10;")
    return f'<update><delete id="{escaped}"/></update>\n'


@dataclass(frozen=True)
class Case:
    """One hostile document: how to build it for a version, and what its refusal must say."""

    name: str
    build: Callable[[int], bytes]
    words: tuple[str, ...]
    #: The refused id a refusal must echo (`services.contracts.echo`), when there is one.
    policy_id: str | None = None


#: Policy ids outside the schema pattern `[A-Za-z0-9_.:-]{1,64}`: each used to crash the
#: worker for good (the refusal re-validated the echoed id), in a policy and in a delete.
POISON_IDS = {
    "semicolon": "a;b",
    "double-quote": 'a"b',
    "space": "a b",
    "newline": "a\nb",
    "65-characters": "x" * 65,
    "non-ascii": "caf\u00e9",
    "empty": "",
    "megabyte": "y" * 1_000_000,
}


def poison_cases() -> list[Case]:
    """Every poison id in an Install and in an Update's delete."""
    cases = []
    for name, value in POISON_IDS.items():
        in_policy = partial(_with_body, install(policy(value)))
        in_delete = partial(_with_body, delete(value))
        cases.append(Case(f"id-{name}-in-policy", in_policy, ("id",), value))
        cases.append(Case(f"id-{name}-in-delete", in_delete, ("id",), value))
    return cases


def _with_body(body: str, version: int) -> bytes:
    return document(body, version)


_BOMB = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10 if n > 1 else "&lol;" * 10}">'
        for n in range(1, 10)
    )
    + "]>\n"
)


def _bomb(version: int) -> bytes:
    head = _BOMB + _HEAD.split("\n", 1)[1]
    return document(
        install(policy("a")).replace("<install>", "<install>&lol9;"), version, head=head
    )


def _xxe(version: int) -> bytes:
    head = (
        '<?xml version="1.0"?>\n<!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        + _HEAD.split("\n", 1)[1]
    )
    return document(install(policy("a")).replace("<install>", "<install>&x;"), version, head=head)


def _xinclude(version: int) -> bytes:
    include = (
        '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" '
        'parse="text"/>'
    )
    return document(install(policy("a")).replace("<install>", "<install>" + include), version)


def _processing_instruction(version: int) -> bytes:
    return document('<?evil run="me"?>' + install(policy("a")), version)


def _deep(version: int) -> bytes:
    return document("<install>" + "<x>" * 5000 + "</x>" * 5000 + "</install>\n", version)


def _oversize(version: int) -> bytes:
    padding = "<!-- " + "p" * (4 * 1024 * 1024) + " -->\n"
    return document(padding + install(policy("a")), version)


def _too_many(version: int) -> bytes:
    return document(install(*(policy(f"p{n}", port=n % 60000 + 1) for n in range(20001))), version)


def _utf16(version: int, *, bom: bool) -> bytes:
    text = document(install(policy("a")), version).decode("utf-8")
    text = text.replace('encoding="UTF-8"', 'encoding="UTF-16"')
    return ("\ufeff" + text if bom else text).encode("utf-16-le")


def _utf16_doctype(version: int) -> bytes:
    # The DTD guard's byte scan for `<!DOCTYPE` cannot see it in UTF-16.
    text = _bomb(version).decode("utf-8").replace('<?xml version="1.0"?>', "")
    return ('<?xml version="1.0" encoding="UTF-16"?>' + text).encode("utf-16-le")


def _declared(encoding: str) -> Callable[[int], bytes]:
    def build(version: int) -> bytes:
        head = _HEAD.replace('encoding="UTF-8"', f'encoding="{encoding}"')
        return document(install(policy("a")), version, head=head)

    return build


def _nul(version: int) -> bytes:
    return document(install(policy("a")), version).replace(b"<install>", b"<install>\0")


def _prefix(prefix: str) -> Callable[[int], bytes]:
    def build(version: int) -> bytes:
        body = (
            '<install><policy id="a" priority="1"><selector><destination>'
            f"<prefix>{prefix}</prefix></destination></selector><drop/></policy></install>\n"
        )
        return document(body, version)

    return build


def _ports(first: str, last: str) -> Callable[[int], bytes]:
    def build(version: int) -> bytes:
        body = install(policy("a")).replace(
            'first="5001" last="5001"', f'first="{first}" last="{last}"'
        )
        return document(body, version)

    return build


#: Inputs the worker already refused before this battery was written, still answered right.
HOLDING = [
    Case("xml-bomb", _bomb, ("doctype",)),
    Case("xxe", _xxe, ("doctype",)),
    Case("xinclude", _xinclude, ("include",)),
    Case("processing-instruction", _processing_instruction, ("processing instruction",)),
    Case("deep-nesting", _deep, ("depth",)),
    Case("oversize", _oversize, ("over the limit",)),
    Case("20001-policies", _too_many, ("more than 20000 policies",)),
    Case("wrong-node", lambda v: document(install(policy("a")), v, node="ha2"), ("node",)),
    Case("bad-prefix-length", _prefix("2001:db8::/129"), ("prefix",)),
    Case("prefix-host-bits", _prefix("2001:db8::1/64"), ("host bits",)),
    Case("prefix-not-an-address", _prefix("not-an-address/8"), ("prefix",)),
    Case("port-out-of-range", _ports("70000", "70000"), ("destination-port",)),
    Case("port-range-reversed", _ports("6000", "5000"), ("after its end",)),
    Case("undeclared-bid", lambda v: document(install(policy("a", bid=9)), v), ("bid 9",)),
    Case("not-xml", lambda v: b"\x00\xff garbage", ("utf-8",)),
    Case("empty", lambda v: b"", ("not well-formed",)),
]

#: Encodings other than UTF-8, refused before parsing, the reason saying so.
ENCODINGS = [
    Case("utf-16le-ascii-valid-utf-8", lambda v: _utf16(v, bom=False), ("not utf-8", "nul")),
    Case("utf-16le-with-bom", lambda v: _utf16(v, bom=True), ("not utf-8", "utf-16")),
    Case("utf-16-doctype-bomb", _utf16_doctype, ("not utf-8",)),
    Case(
        "utf-32",
        lambda v: document(install(policy("a")), v).decode().encode("utf-32"),
        ("not utf-8", "utf-32"),
    ),
    Case("declares-utf-16", _declared("UTF-16"), ("not utf-8", "utf-16")),
    Case("declares-latin-1", _declared("ISO-8859-1"), ("not utf-8", "iso-8859-1")),
    Case("declares-ebcdic", _declared("IBM037"), ("not utf-8", "ibm037")),
    Case("nul-byte", _nul, ("not utf-8", "nul")),
]
