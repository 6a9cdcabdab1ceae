"""The XML form of policy messages: one hardened parser and one renderer for every path.

Documents arrive from the SOAP interface and the bus, so they are untrusted. `parse` refuses
anything beyond our vocabulary before it can cost memory or reach a file: no DTD, no entities,
no processing instructions, UTF-8 only (no other byte-order mark, no NUL byte, no other
`encoding=` declared), a byte limit before parsing and a policy-count limit before building
models. The XSD of the document's version (`policy.xsd` for version 1, namespace
`urn:multinet:flow-policy:1`; `policy-2.xsd` for version 2, which adds the balance,
duplicate and priority actions) fixes structure and value ranges; the pydantic
models add the cross-field rules. Every refusal is a `PolicyDocumentError` whose problems name
the line, the policy id and the field, so a sender can fix its document without guessing.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import itertools
import re
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar, cast

from lxml import etree
from pydantic import BaseModel, ValidationError

from services.contracts import policy_raw
from services.contracts.errors import PolicyDocumentError, Problem
from services.contracts.policy import (
    AddressMatch,
    AddressRange,
    Balance,
    Drop,
    Duplicate,
    Flush,
    Forward,
    Install,
    IPAddress,
    Policy,
    PolicyMessage,
    PortRange,
    Priority,
    Selector,
    Share,
    Tier,
    Update,
)

#: Version 1: forward and drop. Still accepted unchanged, and still written for every message
#: that needs nothing newer, so nodes that know only version 1 keep understanding them.
NAMESPACE = "urn:multinet:flow-policy:1"
#: Version 2: version 1 plus the balance, duplicate and priority actions (`policy-2.xsd`).
NAMESPACE_V2 = "urn:multinet:flow-policy:2"
#: Document version by namespace, and the schema file of each.
VERSIONS = {NAMESPACE: 1, NAMESPACE_V2: 2}
_SCHEMA_FILES = {1: "policy.xsd", 2: "policy-2.xsd"}
_NAMESPACE_OF = {version: namespace for namespace, version in VERSIONS.items()}
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_POLICIES = 20000

#: More problems than this are summarised: a sender fixes the first ones and resends.
_MAX_PROBLEMS = 20

#: The ", line L, column C" that lxml appends to a syntax error; the line is reported apart.
_POSITION = re.compile(r", line \d+, column \d+$")

#: Byte-order marks of the encodings libxml2 would switch to (UTF-32 first: its little-endian
#: mark starts with UTF-16's).
_FOREIGN_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
)
_UTF8_BOM = b"\xef\xbb\xbf"
#: An XML declaration is short; one that does not end within this many bytes is libxml2's to
#: refuse.
_DECLARATION_BYTES = 1024
_ENCODING = re.compile(rb"""\sencoding\s*=\s*(["'])(.*?)\1""", re.DOTALL)

#: A value quoted in a schema error longer than this is shortened (the reason stays readable).
_QUOTED_LIMIT = 60
_QUOTED = re.compile(rf"'([^']{{{_QUOTED_LIMIT + 1},}})'")

#: Model field names as the document spells them, so problems speak the sender's language.
_XML_NAMES = {
    "mobile_router": "mobile-router",
    "src_addr": "source",
    "dst_addr": "destination",
    "src_port": "source-port",
    "dst_port": "destination-port",
    "next_header": "next-header",
    "flow_label": "flow-label",
    "fallbacks": "fallback",
    "shares": "share",
    "paths": "path",
    "tiers": "tier",
    "rate_bps": "rate-bps",
}

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")

# An XMLSchema object keeps its error log on itself, so concurrent validations must not overlap.
_SCHEMA_LOCK = threading.Lock()


class _LogEntry(Protocol):
    """The fields of an lxml error-log entry we report (lxml-stubs leave the log untyped)."""

    message: str
    line: int
    path: str | None


def _entries(log: object) -> list[_LogEntry]:
    return list(cast("Iterable[_LogEntry]", log))


def _line(node: etree._Element) -> int | None:
    line = node.sourceline  # lxml-stubs type it as `...`
    return line if isinstance(line, int) else None


def _q(name: str, namespace: str = NAMESPACE) -> str:
    return f"{{{namespace}}}{name}"


def _qn(element: etree._Element, name: str) -> str:
    """`name` in the namespace of `element` (a document is in one namespace, whichever
    version it is)."""
    return _q(name, etree.QName(element).namespace or NAMESPACE)


def _hardened_parser() -> etree.XMLParser:
    """A parser that never loads a DTD, expands an entity or touches the network.

    Parsers are not thread-safe, so each parse gets its own. Comments are dropped at parse
    time so that text split by a comment reads as one value, as the XSD sees it.
    """
    return etree.XMLParser(
        encoding="utf-8",  # whatever the document declares (refused before parsing anyway)
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
    )


def _load_schema(filename: str) -> etree.XMLSchema:
    source = importlib.resources.files("services.contracts").joinpath(filename)
    return etree.XMLSchema(etree.fromstring(source.read_bytes(), _hardened_parser()))


#: Loaded at import, so a missing or broken schema stops the service before it takes input.
_SCHEMAS = {version: _load_schema(filename) for version, filename in _SCHEMA_FILES.items()}


def _refusal(problems: list[Problem]) -> PolicyDocumentError:
    if len(problems) > _MAX_PROBLEMS:
        hidden = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], Problem(f"{hidden} more problems not shown")]
    return PolicyDocumentError(problems)


def _refuse(reason: str, *, line: int | None = None) -> PolicyDocumentError:
    return PolicyDocumentError([Problem(reason, line=line)])


# --- Parsing -------------------------------------------------------------------------------


def parse(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_policies: int = DEFAULT_MAX_POLICIES,
) -> PolicyMessage:
    """Turn an untrusted policy document into a validated message, or refuse it whole."""
    root = _parse_tree(data, max_bytes=max_bytes)
    _check_policy_count(root, max_policies)
    _check_schema(root)
    try:
        return policy_raw.message(root)
    except (ValueError, LookupError, TypeError):  # pydantic's ValidationError is a ValueError
        # Built again model by model, for problems that name the line, policy and field.
        return _message(root)


def validate_xsd(data: bytes) -> None:
    """Check a document against the schema only, e.g. for a validate-only command."""
    _check_schema(_parse_tree(data, max_bytes=DEFAULT_MAX_BYTES))


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _parse_tree(data: bytes, *, max_bytes: int) -> etree._Element:
    """Parse with every XML feature we do not use refused, before and after parsing."""
    if len(data) > max_bytes:
        raise _refuse(f"document is {len(data)} bytes, over the limit of {max_bytes} bytes")
    _check_encoding(data)
    for marker in (b"<!DOCTYPE", b"<!ENTITY"):
        at = data.find(marker)
        if at >= 0:
            reason = f"{marker.decode()} is not allowed: policy documents carry no DTD or entities"
            raise _refuse(reason, line=_line_at(data, at))
    try:
        root = etree.fromstring(data, _hardened_parser())
    except etree.XMLSyntaxError as error:
        # Not error.error_log: libxml2 can leave entries of an earlier parse in it.
        reason = _POSITION.sub("", str(error.msg))
        raise _refuse(f"not well-formed XML: {reason}", line=error.lineno) from error
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None:
        raise _refuse("a DOCTYPE is not allowed: policy documents carry no DTD")
    outside = [*root.itersiblings(preceding=True), *root.itersiblings()]
    for node in itertools.chain(outside, root.iter(etree.PI, etree.Entity)):
        kind = "entity reference" if isinstance(node, etree._Entity) else "processing instruction"
        raise _refuse(f"a {kind} is not allowed in a policy document", line=_line(node))
    namespace = etree.QName(root).namespace
    if namespace not in VERSIONS:
        got = namespace or "no namespace"
        raise _refuse(
            f"expected namespace {NAMESPACE} or {NAMESPACE_V2}, got {got}", line=_line(root)
        )
    return root


def _check_encoding(data: bytes) -> None:
    """Refuse anything but UTF-8 before libxml2 sees it.

    Only UTF-8 keeps the byte scan for DOCTYPE and ENTITY meaningful: UTF-16 text hides them
    from it (a NUL byte beside every ASCII character), and UTF-16LE of ASCII characters is
    valid UTF-8 too, so decoding alone does not tell; its NUL bytes do. A declared `encoding=`
    other than UTF-8 would make libxml2 reinterpret the bytes after the scan, so it is refused
    as well.
    """
    for bom, name in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise _refuse(f"document is not UTF-8: it starts with a {name} byte-order mark")
    nul = data.find(b"\0")
    if nul >= 0:
        raise _refuse(
            "document is not UTF-8: it contains a NUL byte (UTF-16 or UTF-32 text?), and XML "
            "allows no NUL character",
            line=_line_at(data, nul),
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _refuse("document is not UTF-8 encoded", line=_line_at(data, error.start)) from None
    head = data.removeprefix(_UTF8_BOM)
    if not head.startswith(b"<?xml"):
        return
    end = head.find(b"?>", 0, _DECLARATION_BYTES)
    found = _ENCODING.search(head, 0, end) if end >= 0 else None
    if found is None:
        return
    declared = found.group(2).decode("utf-8")
    if declared.lower().replace("-", "").replace("_", "") != "utf8":
        raise _refuse(f"document is not UTF-8: it declares encoding {declared!r}", line=1)


def _check_policy_count(root: etree._Element, limit: int) -> None:
    """Count before validating, so an oversized batch never costs schema or model work."""
    entries = itertools.islice(root.iter(_qn(root, "policy"), _qn(root, "delete")), limit + 1)
    if sum(1 for _ in entries) > limit:
        raise _refuse(f"document carries more than {limit} policies, over the limit")


def _check_schema(root: etree._Element) -> None:
    schema = _SCHEMAS[VERSIONS[etree.QName(root).namespace or NAMESPACE]]
    with _SCHEMA_LOCK:
        valid = schema.validate(root)
        entries = [] if valid else _entries(schema.error_log)
    if valid:
        return
    # libxml2 follows a bad key value with an ERROR-level "Warning: no precomputed value".
    problems = [_schema_problem(root, e) for e in entries if "Warning:" not in e.message]
    if schema is _SCHEMAS[1]:
        problems = [_version_hint(p) for p in problems]
    raise _refusal(problems or [Problem("document does not match the schema")])


def _version_hint(problem: Problem) -> Problem:
    """A version-1 document using a version-2 action: say which namespace it needs."""
    for name in ("balance", "duplicate", "priority"):
        if f"Element '{name}'" in problem.reason:
            reason = (
                f"{problem.reason} (the {name} action needs a version-2 document, "
                f"namespace {NAMESPACE_V2})"
            )
            return Problem(
                reason, policy_id=problem.policy_id, field=problem.field, line=problem.line
            )
    return problem


_ATTRIBUTE = re.compile(r"attribute '([A-Za-z-]+)'")


def _shorten_quoted(match: re.Match[str]) -> str:
    value = match.group(1)
    return f"'{value[: _QUOTED_LIMIT - 20]}...' ({len(value)} characters)"


def _schema_problem(root: etree._Element, entry: _LogEntry) -> Problem:
    # libxml2 quotes the refused value whole; a long one would crowd out the explanation.
    reason = entry.message
    for namespace in VERSIONS:
        reason = reason.replace(f"{{{namespace}}}", "")
    reason = _QUOTED.sub(_shorten_quoted, reason)
    element = _element_at(root, entry.path)
    if element is None:
        return Problem(reason, line=entry.line)
    policy_id, field = _where(element)
    attribute = _ATTRIBUTE.search(reason)
    if field is None and attribute is not None:
        field = attribute.group(1)  # an attribute of the policy itself: `id`, `priority`
    return Problem(reason, policy_id=policy_id, field=field, line=entry.line)


def _element_at(root: etree._Element, path: str | None) -> etree._Element | None:
    if not path:
        return None
    try:
        found = root.getroottree().xpath(path)
    except etree.XPathError:
        return None
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return found[0]
    return None


def _where(element: etree._Element, *below: str) -> tuple[str | None, str | None]:
    """The policy id an element belongs to and its dotted path inside that policy.

    Outside any policy the path starts below the root (`install`, `update.insert`).
    """
    names: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        name = etree.QName(node).localname
        if name in ("policy", "delete"):
            return node.get("id"), ".".join([*reversed(names), *below]) or None
        names.append(name)
        node = node.getparent()
    return None, ".".join([*reversed(names[:-1]), *below]) or None


def _problem(element: etree._Element, reason: str, *below: str) -> Problem:
    policy_id, field = _where(element, *below)
    return Problem(reason, policy_id=policy_id, field=field, line=_line(element))


def _build(model: type[_M], element: etree._Element, **values: object) -> _M:
    """Validate one model from one element, reporting pydantic errors at that element."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = []
        for detail in error.errors():
            reason = detail["msg"].removeprefix("Value error, ")
            below = [_XML_NAMES.get(str(part), str(part)) for part in detail["loc"]]
            problems.append(_problem(element, reason, *below))
        raise _refusal(problems) from error


# Values below have passed the schema, so their lexical form is known to be valid.


def _int(text: str | None) -> int:
    return int((text or "").strip())


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


def _message(root: etree._Element) -> PolicyMessage:
    operation_element = root[0]
    build = _OPERATIONS[etree.QName(operation_element).localname]
    return _build(
        PolicyMessage,
        root,
        node=root.get("node"),
        mobile_router=root.get("mobile-router"),
        direction=root.get("direction"),
        version=_int(root.get("version")),
        symmetric=root.get("symmetric", "false") in ("true", "1"),
        operation=build(operation_element),
    )


def _install(element: etree._Element) -> Install:
    return _build(
        Install, element, policies=_policies(element.iterchildren(_qn(element, "policy")))
    )


def _update(element: etree._Element) -> Update:
    deletes = tuple(d.get("id") for d in element.iterchildren(_qn(element, "delete")))
    replaces = (holder[0] for holder in element.iterchildren(_qn(element, "replace")))
    inserts = (holder[0] for holder in element.iterchildren(_qn(element, "insert")))
    return _build(
        Update, element, delete=deletes, replace=_policies(replaces), insert=_policies(inserts)
    )


def _flush(_element: etree._Element) -> Flush:
    return Flush()


_OPERATIONS: dict[str, Callable[[etree._Element], Install | Update | Flush]] = {
    "install": _install,
    "update": _update,
    "flush": _flush,
}


def _policies(elements: Iterable[etree._Element]) -> tuple[Policy, ...]:
    """Build every policy and report the problems of all of them, not just the first."""
    built: list[Policy] = []
    problems: list[Problem] = []
    for element in elements:
        try:
            built.append(_policy(element))
        except PolicyDocumentError as error:
            problems.extend(error.problems)
    if problems:
        raise _refusal(problems)
    return tuple(built)


def _policy(element: etree._Element) -> Policy:
    selector_element = element.find(_qn(element, "selector"))
    selector = Selector() if selector_element is None else _selector(selector_element)
    action_element = element[-1]
    action = _ACTIONS[etree.QName(action_element).localname](action_element)
    return _build(
        Policy,
        element,
        id=element.get("id"),
        priority=_int(element.get("priority")),
        selector=selector,
        action=action,
    )


def _bids_of(element: etree._Element, name: str) -> tuple[int, ...]:
    return tuple(_int(child.get("bid")) for child in element.iterchildren(_qn(element, name)))


def _forward(element: etree._Element) -> Forward:
    fallbacks = _bids_of(element, "fallback")
    return _build(Forward, element, bid=_int(element.get("bid")), fallbacks=fallbacks)


def _balance(element: etree._Element) -> Balance:
    shares = tuple(
        _build(Share, child, bid=_int(child.get("bid")), weight=_int(child.get("weight")))
        for child in element.iterchildren(_qn(element, "share"))
    )
    return _build(Balance, element, shares=shares, fallbacks=_bids_of(element, "fallback"))


def _duplicate(element: etree._Element) -> Duplicate:
    paths = _bids_of(element, "path")
    return _build(Duplicate, element, paths=paths, fallbacks=_bids_of(element, "fallback"))


def _priority(element: etree._Element) -> Priority:
    tiers = tuple(
        _build(Tier, child, bid=_int(child.get("bid")), rate_bps=_optional_int(child, "rate-bps"))
        for child in element.iterchildren(_qn(element, "tier"))
    )
    return _build(Priority, element, tiers=tiers, fallbacks=_bids_of(element, "fallback"))


def _optional_int(element: etree._Element, attribute: str) -> int | None:
    text = element.get(attribute)
    return None if text is None else _int(text)


_Action = Forward | Drop | Balance | Duplicate | Priority
_ACTIONS: dict[str, Callable[[etree._Element], _Action]] = {
    "forward": _forward,
    "drop": lambda _element: Drop(),
    "balance": _balance,
    "duplicate": _duplicate,
    "priority": _priority,
}


def _selector(element: etree._Element) -> Selector:
    parts = {etree.QName(child).localname: child for child in element}

    def optional(name: str, read: Callable[[etree._Element], _T]) -> _T | None:
        return read(parts[name]) if name in parts else None

    return _build(
        Selector,
        element,
        src_addr=optional("source", _address),
        dst_addr=optional("destination", _address),
        src_port=optional("source-port", _ports),
        dst_port=optional("destination-port", _ports),
        next_header=optional("next-header", lambda e: _int(e.text)),
        dscp=optional("dscp", lambda e: _int(e.text)),
        flow_label=optional("flow-label", lambda e: _int(e.text)),
    )


def _address(element: etree._Element) -> AddressMatch:
    """A prefix or a range; ipaddress gives clearer reasons than a pydantic union would."""
    match = element[0]
    if etree.QName(match).localname == "prefix":
        text = _text(match)
        try:
            return ipaddress.ip_network(text)
        except ValueError as error:
            raise PolicyDocumentError([_problem(match, f"bad prefix {text!r}: {error}")]) from None
    first = _ip(match, "first")
    last = _ip(match, "last")
    return _build(AddressRange, match, first=first, last=last)


def _ip(element: etree._Element, attribute: str) -> IPAddress:
    text = (element.get(attribute) or "").strip()
    try:
        return ipaddress.ip_address(text)
    except ValueError as error:
        problem = _problem(element, f"bad address {text!r}: {error}", attribute)
        raise PolicyDocumentError([problem]) from None


def _ports(element: etree._Element) -> PortRange:
    first, last = _int(element.get("first")), _int(element.get("last"))
    return _build(PortRange, element, first=first, last=last)


# --- Rendering -----------------------------------------------------------------------------


def render(message: PolicyMessage) -> bytes:
    """The canonical document for a message; `parse(render(m)) == m`.

    Written in version 1 unless an action needs version 2 (`PolicyMessage.schema_version`),
    so a node that knows only version 1 still takes every message it can enforce.
    """
    namespace = _NAMESPACE_OF[message.schema_version()]
    root = etree.Element(
        _q("policy-message", namespace),
        {
            "node": message.node,
            "mobile-router": message.mobile_router,
            "direction": message.direction.value,
            "version": str(message.version),
            **({"symmetric": "true"} if message.symmetric else {}),
        },
        nsmap={None: namespace},  # type: ignore[dict-item]  # lxml-stubs forbid the default
    )
    operation = message.operation
    if isinstance(operation, Install):
        install = etree.SubElement(root, _qn(root, "install"))
        for policy in operation.policies:
            _render_policy(install, policy)
    elif isinstance(operation, Update):
        update = etree.SubElement(root, _qn(root, "update"))
        for policy_id in operation.delete:
            etree.SubElement(update, _qn(root, "delete"), id=policy_id)
        for policy in operation.replace:
            _render_policy(etree.SubElement(update, _qn(root, "replace")), policy)
        for policy in operation.insert:
            _render_policy(etree.SubElement(update, _qn(root, "insert")), policy)
    else:
        etree.SubElement(root, _qn(root, "flush"))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _render_policy(parent: etree._Element, policy: Policy) -> None:
    def q(name: str) -> str:
        return _qn(parent, name)

    element = etree.SubElement(parent, q("policy"), id=policy.id, priority=str(policy.priority))
    if policy.selector != Selector():
        _render_selector(etree.SubElement(element, q("selector")), policy.selector)
    action = policy.action
    fallbacks: tuple[int, ...] = ()
    if isinstance(action, Forward):
        holder = etree.SubElement(element, q("forward"), bid=str(action.bid))
        fallbacks = action.fallbacks
    elif isinstance(action, Balance):
        holder = etree.SubElement(element, q("balance"))
        for share in action.shares:
            etree.SubElement(holder, q("share"), bid=str(share.bid), weight=str(share.weight))
        fallbacks = action.fallbacks
    elif isinstance(action, Duplicate):
        holder = etree.SubElement(element, q("duplicate"))
        for bid in action.paths:
            etree.SubElement(holder, q("path"), bid=str(bid))
        fallbacks = action.fallbacks
    elif isinstance(action, Priority):
        holder = etree.SubElement(element, q("priority"))
        for tier in action.tiers:
            written = etree.SubElement(holder, q("tier"), bid=str(tier.bid))
            if tier.rate_bps is not None:
                written.set("rate-bps", str(tier.rate_bps))
        fallbacks = action.fallbacks
    else:
        etree.SubElement(element, q("drop"))
    for bid in fallbacks:
        etree.SubElement(holder, q("fallback"), bid=str(bid))


def _render_selector(element: etree._Element, selector: Selector) -> None:
    def q(name: str) -> str:
        return _qn(element, name)

    for name, address in (("source", selector.src_addr), ("destination", selector.dst_addr)):
        if address is not None:
            _render_address(etree.SubElement(element, q(name)), address)
    for name, ports in (
        ("source-port", selector.src_port),
        ("destination-port", selector.dst_port),
    ):
        if ports is not None:
            etree.SubElement(element, q(name), first=str(ports.first), last=str(ports.last))
    for name, number in (
        ("next-header", selector.next_header),
        ("dscp", selector.dscp),
        ("flow-label", selector.flow_label),
    ):
        if number is not None:
            etree.SubElement(element, q(name)).text = str(number)


def _render_address(element: etree._Element, address: AddressMatch) -> None:
    if isinstance(address, AddressRange):
        etree.SubElement(
            element, _qn(element, "range"), first=str(address.first), last=str(address.last)
        )
    else:
        etree.SubElement(element, _qn(element, "prefix")).text = address.with_prefixlen
