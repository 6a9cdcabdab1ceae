"""Hand-written policy documents: every feature parses as meant, every refusal says where.

Refusal tests check the error type and that the problem names the line, the policy id and the
field, because a sender fixing its document needs all three.
"""

from __future__ import annotations

import ipaddress
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.contracts.errors import PolicyDocumentError, Problem
from services.contracts.policy import (
    AddressRange,
    Direction,
    Drop,
    Flush,
    Forward,
    Install,
    Policy,
    PolicyMessage,
    PortRange,
    Selector,
    Update,
)
from services.contracts.policy_xml import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_POLICIES,
    NAMESPACE,
    parse,
    render,
    validate_xsd,
)

HEAD = (
    f'<policy-message xmlns="{NAMESPACE}" node="ha1" mobile-router="mr1" '
    'direction="downlink" version="7">'
)

FULL = b"""<?xml version="1.0" encoding="UTF-8"?>
<policy-message xmlns="urn:multinet:flow-policy:1" node="ha1" mobile-router="mr1"
                direction="downlink" version="7">
  <install>
    <policy id="web" priority="10">
      <selector>
        <source><prefix>2001:db8:1::/64</prefix></source>
        <destination><range first="2001:db8::1" last="2001:db8::ff"/></destination>
        <source-port first="1024" last="65535"/>
        <destination-port first="80" last="80"/>
        <next-header>6</next-header>
        <dscp>46</dscp>
        <flow-label>12345</flow-label>
      </selector>
      <forward bid="2"><fallback bid="1"/><fallback bid="3"/></forward>
    </policy>
    <policy id="rest" priority="100"><drop/></policy>
  </install>
</policy-message>
"""


def document(body: str, head: str = HEAD) -> bytes:
    """A message around `body`; the body starts on line 3."""
    text = textwrap.dedent(body).strip()
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}\n{text}\n</policy-message>\n'.encode()


def install(policies: str) -> bytes:
    """An install of `policies`; the first policy line is line 4."""
    return document(f"<install>\n{textwrap.dedent(policies).strip()}\n</install>")


def line_of(data: bytes, marker: str, nth: int = 1) -> int:
    at = -1
    for _ in range(nth):
        at = data.index(marker.encode(), at + 1)
    return data.count(b"\n", 0, at) + 1


def refused(data: bytes, **limits: int) -> PolicyDocumentError:
    with pytest.raises(PolicyDocumentError) as info:
        parse(data, **limits)
    assert info.value.problems, "a refusal must say why"
    return info.value


def only(error: PolicyDocumentError) -> Problem:
    assert len(error.problems) == 1, error.problems
    return error.problems[0]


# --- Features ------------------------------------------------------------------------------


def test_full_example_parses_every_selector_field() -> None:
    message = parse(FULL)
    assert message.node == "ha1"
    assert message.mobile_router == "mr1"
    assert message.direction is Direction.DOWNLINK
    assert message.version == 7
    assert isinstance(message.operation, Install)
    web, rest = message.operation.policies
    assert web == Policy(
        id="web",
        priority=10,
        selector=Selector(
            src_addr=ipaddress.IPv6Network("2001:db8:1::/64"),
            dst_addr=AddressRange(
                first=ipaddress.IPv6Address("2001:db8::1"),
                last=ipaddress.IPv6Address("2001:db8::ff"),
            ),
            src_port=PortRange(first=1024, last=65535),
            dst_port=PortRange(first=80, last=80),
            next_header=6,
            dscp=46,
            flow_label=12345,
        ),
        action=Forward(bid=2, fallbacks=(1, 3)),
    )
    assert rest == Policy(id="rest", priority=100, action=Drop())


def test_ipv4_prefix_and_range() -> None:
    data = install("""
        <policy id="v4" priority="1">
          <selector>
            <source><range first="10.0.0.1" last="10.0.0.9"/></source>
            <destination><prefix>192.0.2.0/24</prefix></destination>
          </selector>
          <forward bid="1"/>
        </policy>
    """)
    (policy,) = parse(data).operation.policies  # type: ignore[union-attr]
    assert policy.selector.src_addr == AddressRange(
        first=ipaddress.IPv4Address("10.0.0.1"), last=ipaddress.IPv4Address("10.0.0.9")
    )
    assert policy.selector.dst_addr == ipaddress.IPv4Network("192.0.2.0/24")


def test_update_lists_and_their_order() -> None:
    data = document("""
        <update>
          <delete id="old"/>
          <delete id="older"/>
          <replace><policy id="web" priority="5"><drop/></policy></replace>
          <insert><policy id="new" priority="7"><forward bid="4"/></policy></insert>
          <insert><policy id="newer" priority="8"><drop/></policy></insert>
        </update>
    """)
    operation = parse(data).operation
    assert operation == Update(
        delete=("old", "older"),
        replace=(Policy(id="web", priority=5, action=Drop()),),
        insert=(
            Policy(id="new", priority=7, action=Forward(bid=4)),
            Policy(id="newer", priority=8, action=Drop()),
        ),
    )


@pytest.mark.parametrize(
    ("body", "operation"),
    [
        ("<flush/>", Flush()),
        ("<install/>", Install()),
        ("<update/>", Update()),
    ],
)
def test_empty_operations(body: str, operation: Install | Update | Flush) -> None:
    assert parse(document(body)).operation == operation


def test_uplink_and_large_version() -> None:
    head = HEAD.replace("downlink", "uplink").replace('"7"', f'"{2**63 - 1}"')
    message = parse(document("<flush/>", head))
    assert message.direction is Direction.UPLINK
    assert message.version == 2**63 - 1


def test_selector_parts_in_any_order_with_comments_cdata_and_whitespace() -> None:
    data = install("""
        <!-- a hand-written policy -->
        <policy id="x" priority="3">
          <selector>
            <dscp> 1<!-- split -->0 </dscp>
            <destination-port first="53" last="53"/>
            <next-header>17</next-header>
            <destination><prefix>
              <![CDATA[2001:db8::/32]]>
            </prefix></destination>
          </selector>
          <drop/>
        </policy>
    """)
    (policy,) = parse(data).operation.policies  # type: ignore[union-attr]
    assert policy.selector == Selector(
        dst_addr=ipaddress.IPv6Network("2001:db8::/32"),
        dst_port=PortRange(first=53, last=53),
        next_header=17,
        dscp=10,
    )


def test_render_is_canonical_utf8_with_declaration() -> None:
    message = parse(FULL)
    rendered = render(message)
    assert rendered.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert f'xmlns="{NAMESPACE}"'.encode() in rendered
    assert parse(rendered) == message
    assert render(parse(rendered)) == rendered
    validate_xsd(rendered)


def test_render_omits_an_empty_selector() -> None:
    message = PolicyMessage(
        node="mr1",
        mobile_router="mr1",
        direction=Direction.UPLINK,
        version=1,
        operation=Install(policies=(Policy(id="all", priority=0, action=Drop()),)),
    )
    assert b"selector" not in render(message)
    assert parse(render(message)) == message


def test_limits_have_the_documented_defaults() -> None:
    assert DEFAULT_MAX_BYTES == 4 * 1024 * 1024
    assert DEFAULT_MAX_POLICIES == 20000
    assert NAMESPACE == "urn:multinet:flow-policy:1"


# --- Refusals: well-formedness and hardening --------------------------------------------------


def test_malformed_xml_names_the_line() -> None:
    data = document("<install>\n<policy id='a' priority='1'><drop/></policy>\n<flush/>")
    problem = only(refused(data))
    assert "not well-formed" in problem.reason
    assert problem.line is not None
    assert problem.line >= 5


def test_empty_and_garbage_input() -> None:
    assert "not well-formed" in only(refused(b"")).reason
    assert "not UTF-8" in only(refused(b"\xff\xfe\x00<")).reason


def _utf16(data: bytes) -> bytes:
    return data.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16-le")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        # UTF-16LE of ASCII characters is valid UTF-8; its NUL bytes give it away.
        (_utf16(document("<flush/>")), "contains a NUL byte"),
        (b"\xff\xfe" + _utf16(document("<flush/>")), "UTF-16 (little-endian) byte-order mark"),
        (document("<flush/>").decode().encode("utf-16-be"), "contains a NUL byte"),
        (document("<flush/>").decode().encode("utf-32"), "UTF-32 (little-endian) byte-order"),
        (document("<flush/>").replace(b"UTF-8", b"UTF-16"), "declares encoding 'UTF-16'"),
        (document("<flush/>").replace(b"UTF-8", b"latin1"), "declares encoding 'latin1'"),
        (document("<flush/>").replace(b"<flush/>", b"<flush/>\0"), "contains a NUL byte"),
    ],
    ids=["utf-16le", "utf-16le-bom", "utf-16be", "utf-32", "declared-utf-16", "latin1", "nul"],
)
def test_anything_but_utf_8_is_refused_before_parsing(data: bytes, words: str) -> None:
    problem = only(refused(data))
    assert problem.reason.startswith("document is not UTF-8")
    assert words in problem.reason


@pytest.mark.parametrize("declared", ["UTF-8", "utf-8", "utf8", "UTF_8"])
def test_utf_8_may_be_declared_in_any_spelling(declared: str) -> None:
    data = document("<flush/>").replace(b"UTF-8", declared.encode())
    assert parse(data).operation.kind == "flush"
    assert parse(b"\xef\xbb\xbf" + data).operation.kind == "flush"


def test_doctype_is_refused_before_parsing() -> None:
    data = b'<?xml version="1.0"?>\n<!DOCTYPE policy-message>\n' + document("<flush/>")[22:]
    problem = only(refused(data))
    assert "DOCTYPE" in problem.reason
    assert problem.line == 2


def test_billion_laughs_is_refused() -> None:
    lols = "\n".join(
        f'  <!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    data = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n  <!ENTITY lol0 "lol">\n'
        f"{lols}\n]>\n"
        f'<policy-message xmlns="{NAMESPACE}" node="&lol9;" mobile-router="mr1" '
        'direction="downlink" version="1"><flush/></policy-message>'
    ).encode()
    problem = only(refused(data))
    assert "DOCTYPE" in problem.reason
    assert problem.line == 2


def test_external_entity_is_refused_and_never_read() -> None:
    data = (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        f'<policy-message xmlns="{NAMESPACE}" node="&xxe;" mobile-router="mr1" '
        'direction="downlink" version="1"><flush/></policy-message>'
    ).encode()
    error = refused(data)
    assert "DOCTYPE" in str(error)
    assert "root:" not in str(error)


def test_entity_without_doctype_is_refused() -> None:
    data = document('<install><policy id="&xxe;" priority="1"><drop/></policy></install>')
    problem = only(refused(data))
    assert "not well-formed" in problem.reason
    assert "xxe" in problem.reason
    assert problem.line == 3


def test_doctype_hidden_in_utf16_is_refused() -> None:
    text = (
        '<?xml version="1.0" encoding="UTF-16"?>\n'
        '<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        f'<policy-message xmlns="{NAMESPACE}" node="&xxe;" mobile-router="mr1" '
        'direction="downlink" version="1"><flush/></policy-message>'
    )
    error = refused(text.encode("utf-16"))
    assert "not UTF-8" in str(error)


def test_processing_instruction_is_refused() -> None:
    data = install('<?evil x?>\n<policy id="a" priority="1"><drop/></policy>')
    problem = only(refused(data))
    assert "processing instruction" in problem.reason
    assert problem.line == 4


def test_oversized_document_is_refused_before_parsing() -> None:
    data = FULL + b" " * 100
    problem = only(refused(data, max_bytes=len(FULL)))
    assert f"over the limit of {len(FULL)} bytes" in problem.reason
    # The limit applies before well-formedness: garbage over the limit says "too big".
    assert "over the limit" in only(refused(b"<" * (DEFAULT_MAX_BYTES + 1))).reason


def test_too_many_policies_is_refused() -> None:
    assert parse(FULL, max_policies=2).operation.kind == "install"
    problem = only(refused(FULL, max_policies=1))
    assert "more than 1 policies" in problem.reason
    deletes = document("<update>" + '<delete id="a"/>' * 3 + "</update>")
    assert "more than 2 policies" in only(refused(deletes, max_policies=2)).reason


# --- Refusals: namespace and schema ----------------------------------------------------------


def test_wrong_namespace_is_named() -> None:
    data = document("<flush/>", HEAD.replace(":1", ":3"))
    problem = only(refused(data))
    assert problem.reason == (
        "expected namespace urn:multinet:flow-policy:1 or urn:multinet:flow-policy:2, "
        "got urn:multinet:flow-policy:3"
    )
    assert problem.line == 2


def test_missing_namespace_is_named() -> None:
    data = document("<flush/>", HEAD.replace(f' xmlns="{NAMESPACE}"', ""))
    assert "got no namespace" in only(refused(data)).reason


def test_missing_attribute_names_policy_and_line() -> None:
    data = install("""
        <policy id="ok" priority="1"><drop/></policy>
        <policy id="web"><drop/></policy>
    """)
    problem = only(refused(data))
    assert "'priority' is required" in problem.reason
    assert problem.policy_id == "web"
    assert problem.line == 5
    assert "line 5, policy 'web'" in str(refused(data))


def test_missing_message_attribute() -> None:
    data = document("<flush/>", HEAD.replace(' node="ha1"', ""))
    problem = only(refused(data))
    assert "'node' is required" in problem.reason
    assert problem.line == 2
    assert problem.policy_id is None


def test_port_out_of_range_is_a_schema_error_at_the_field() -> None:
    data = install("""
        <policy id="web" priority="1">
          <selector>
            <destination-port first="80" last="70000"/>
            <next-header>6</next-header>
          </selector>
          <drop/>
        </policy>
    """)
    problem = only(refused(data))
    assert "70000" in problem.reason
    assert problem.policy_id == "web"
    assert problem.field == "selector.destination-port"
    assert problem.line == line_of(data, "destination-port")


def test_bad_port_range_names_policy_field_and_line() -> None:
    data = install("""
        <policy id="web" priority="1">
          <selector>
            <next-header>6</next-header>
            <destination-port first="90" last="80"/>
          </selector>
          <drop/>
        </policy>
    """)
    problem = only(refused(data))
    assert "port range start 90 is after its end 80" in problem.reason
    assert problem.policy_id == "web"
    assert problem.field == "selector.destination-port"
    assert problem.line == line_of(data, "destination-port")


def test_unknown_element_is_named() -> None:
    data = install("""
        <policy id="web" priority="1">
          <selector>
            <colour>blue</colour>
          </selector>
          <drop/>
        </policy>
    """)
    problem = only(refused(data))
    assert "colour" in problem.reason
    assert "not expected" in problem.reason
    assert problem.policy_id == "web"
    assert problem.field == "selector.colour"
    assert problem.line == line_of(data, "colour")


def test_foreign_attribute_is_refused() -> None:
    data = install('<policy id="web" priority="1" colour="blue"><drop/></policy>')
    problem = only(refused(data))
    assert "colour" in problem.reason
    assert problem.policy_id == "web"
    assert problem.line == 4


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("<flush/><flush/>", "not expected"),
        ("", "Missing child element"),
        ('<install><policy id="a" priority="1"><drop/><drop/></policy></install>', "drop"),
        ('<install><policy id="a" priority="1"/></install>', "Missing child element"),
        ('<install><policy id="a" priority="1"><forward bid="0"/></policy></install>', "'0'"),
        ('<install><policy id="a b" priority="1"><drop/></policy></install>', "a b"),
        ('<install><policy id="a" priority="-1"><drop/></policy></install>', "'-1'"),
        ("<update><insert/></update>", "Missing child element"),
        (
            '<update><insert><policy id="a" priority="1"><drop/></policy></insert>'
            '<delete id="b"/></update>',
            "delete",
        ),
    ],
)
def test_structural_errors(body: str, words: str) -> None:
    data = document(body)
    error = refused(data)
    assert words in str(error)
    assert all(p.line is not None for p in error.problems)


def test_bad_direction_and_version() -> None:
    head = HEAD.replace("downlink", "sideways").replace('"7"', '"0"')
    error = refused(document("<flush/>", head))
    text = str(error)
    assert "sideways" in text
    assert "'0'" in text
    assert all(p.line == 2 for p in error.problems)


@pytest.mark.parametrize(
    ("selector", "value"),
    [("<dscp>64</dscp>", "64"), ("<flow-label>1048576</flow-label>", "1048576")],
)
def test_selector_value_ranges(selector: str, value: str) -> None:
    data = install(f'<policy id="q" priority="1"><selector>{selector}</selector><drop/></policy>')
    problem = only(refused(data))
    assert value in problem.reason
    assert problem.policy_id == "q"
    assert problem.field is not None
    assert problem.field.startswith("selector.")


# --- Refusals: cross-field rules --------------------------------------------------------------


def test_duplicate_ids_in_install() -> None:
    data = install("""
        <policy id="web" priority="1"><drop/></policy>
        <policy id="web" priority="2"><drop/></policy>
    """)
    problem = only(refused(data))
    assert "Duplicate" in problem.reason
    assert "'web'" in problem.reason
    assert problem.policy_id == "web"
    assert problem.line == line_of(data, "web", 2)


def test_id_in_two_update_lists() -> None:
    data = document("""
        <update>
          <delete id="web"/>
          <insert><policy id="web" priority="1"><drop/></policy></insert>
        </update>
    """)
    problem = only(refused(data))
    assert "Duplicate" in problem.reason
    assert problem.policy_id == "web"
    assert problem.line == line_of(data, "web", 2)


def test_ports_need_a_port_protocol() -> None:
    data = install("""
        <policy id="ping" priority="1">
          <selector>
            <destination-port first="80" last="80"/>
            <next-header>1</next-header>
          </selector>
          <drop/>
        </policy>
    """)
    problem = only(refused(data))
    assert "port selector needs next_header TCP (6), UDP (17)" in problem.reason
    assert problem.policy_id == "ping"
    assert problem.field == "selector"
    assert problem.line == line_of(data, "<selector>")


def test_ports_without_next_header() -> None:
    data = install("""
        <policy id="any" priority="1">
          <selector><source-port first="1" last="2"/></selector>
          <drop/>
        </policy>
    """)
    problem = only(refused(data))
    assert problem.policy_id == "any"
    assert "port selector" in problem.reason


@pytest.mark.parametrize(
    ("selector", "field", "words"),
    [
        ("<source><prefix>10.0.0.1/8</prefix></source>", "selector.source.prefix", "host bits"),
        ("<source><prefix>10.0.0.0/33</prefix></source>", "selector.source.prefix", "10.0.0.0"),
        (
            '<destination><range first="10.0.0.9" last="10.0.0.1"/></destination>',
            "selector.destination.range",
            "is after its end",
        ),
        (
            '<destination><range first="10.0.0.1" last="::1"/></destination>',
            "selector.destination.range",
            "different address families",
        ),
        (
            '<destination><range first="10.0.0.999" last="10.0.1.0"/></destination>',
            "selector.destination.range.first",
            "10.0.0.999",
        ),
        (
            "<source><prefix>10.0.0.0/8</prefix></source>"
            "<destination><prefix>2001:db8::/32</prefix></destination>",
            "selector",
            "different families",
        ),
        (
            "<source><prefix>10.0.0.0/8</prefix></source><flow-label>5</flow-label>",
            "selector",
            "flow label",
        ),
    ],
)
def test_address_rules(selector: str, field: str, words: str) -> None:
    data = install(f"""
        <policy id="addr" priority="1">
          <selector>
            {selector}
          </selector>
          <drop/>
        </policy>
    """)
    problem = only(refused(data))
    assert words in problem.reason
    assert problem.policy_id == "addr"
    assert problem.field == field
    assert problem.line is not None


def test_repeated_fallback_bid() -> None:
    data = install("""
        <policy id="f" priority="1">
          <forward bid="2"><fallback bid="1"/><fallback bid="2"/></forward>
        </policy>
    """)
    problem = only(refused(data))
    assert "BID repeated" in problem.reason
    assert problem.policy_id == "f"
    assert problem.field == "forward"
    assert problem.line == line_of(data, "<forward")


def test_problems_of_every_policy_are_reported() -> None:
    data = install("""
        <policy id="a" priority="1">
          <selector><source-port first="9" last="1"/><next-header>6</next-header></selector>
          <drop/>
        </policy>
        <policy id="b" priority="1"><forward bid="3"><fallback bid="3"/></forward></policy>
    """)
    error = refused(data)
    assert [p.policy_id for p in error.problems] == ["a", "b"]
    assert [p.line for p in error.problems] == [line_of(data, "source-port"), 8]


def test_many_problems_are_summarised() -> None:
    policies = "\n".join(
        f'<policy id="p{i}" priority="1"><forward bid="1"><fallback bid="1"/></forward></policy>'
        for i in range(30)
    )
    error = refused(install(policies))
    assert len(error.problems) == 21
    assert error.problems[-1].reason == "10 more problems not shown"


def test_validate_xsd_checks_schema_only() -> None:
    validate_xsd(FULL)
    # A schema-valid document with a cross-field error passes the schema check alone.
    inverted = FULL.replace(b'first="80"', b'first="90"')
    validate_xsd(inverted)
    refused(inverted)
    with pytest.raises(PolicyDocumentError, match="not expected"):
        validate_xsd(document("<flush/><flush/>"))


def test_problems_never_leak_into_the_next_document() -> None:
    """lxml keeps some error logs across parses; each refusal must report only its own."""
    assert "tag mismatch" in only(refused(document("<install>\n<flush/>"))).reason
    entity = document('<install><policy id="&x;" priority="1"><drop/></policy></install>')
    assert "'x' not defined" in only(refused(entity)).reason
    refused(document("<flush/><flush/>"))
    assert (
        "'priority' is required" in only(refused(install('<policy id="a"><drop/></policy>'))).reason
    )
    assert only(refused(document("<update/><flush/>"))).line == 3


def test_parallel_parses_keep_their_own_results() -> None:
    good = FULL
    bad = install('<policy id="a"><drop/></policy>')

    def check(i: int) -> bool:
        if i % 2:
            return parse(good).version == 7
        with pytest.raises(PolicyDocumentError, match="'priority' is required"):
            parse(bad)
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(check, range(400)))


def test_policy_without_id_still_gets_its_field_path() -> None:
    data = install('<policy priority="1"><selector><dscp>99</dscp></selector><drop/></policy>')
    error = refused(data)
    assert any("'id' is required" in p.reason for p in error.problems)
    dscp = [p for p in error.problems if "99" in p.reason]
    assert [(p.policy_id, p.field, p.line) for p in dscp] == [(None, "selector.dscp", 4)]
