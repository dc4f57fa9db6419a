"""Spec: an HTML email goes out with inlined CSS, a text part, and UTM-tagged links."""

from __future__ import annotations

import pytest

from hub.email_html import add_utm, add_utm_text, inline_css, text_from_html, with_utm

UTM = {"utm_source": "hub", "utm_medium": "email"}

# --- CSS ------------------------------------------------------------------------


def test_style_rules_move_into_style_attributes() -> None:
    html = (
        "<html><head><style>p { color: red } .note { font-size: 12px }</style></head>"
        '<body><p class="note">Hi</p></body></html>'
    )

    inlined = inline_css(html)

    assert '<p class="note" style="color: red;font-size: 12px;">Hi</p>' in inlined
    assert "color: red }" not in inlined


def test_media_queries_stay_in_a_style_tag() -> None:
    html = (
        "<html><head><style>p { color: red } @media (max-width: 600px) { p { color: blue } }"
        "</style></head><body><p>Hi</p></body></html>"
    )

    inlined = inline_css(html)

    assert "@media (max-width: 600px)" in inlined
    assert '<p style="color: red;">Hi</p>' in inlined


def test_linked_stylesheets_are_never_fetched() -> None:
    # An unroutable address: fetching it would hang or fail the render.
    html = (
        '<html><head><link rel="stylesheet" href="http://192.0.2.1/mail.css"></head>'
        "<body><p>Hi</p></body></html>"
    )

    assert "<p>Hi</p>" in inline_css(html)


# --- text part ------------------------------------------------------------------

EMAIL = """<!doctype html>
<html><head><title>Welcome</title>
<style>p { color: red }</style><script>track()</script></head>
<body>
  <h1>Welcome,   Ada</h1>
  <p>Your plan is
     <b>Pro</b> &amp; more.<br>Enjoy&nbsp;it.</p>
  <ul>
    <li>Fast</li>
    <li><a href="https://example.com/docs?x=1&amp;y=2">Read the docs</a></li>
  </ul>
  <p>Mail <a href="mailto:help@example.com">help@example.com</a> or see
     <a href="https://example.com/">https://example.com/</a>.</p>
  <div>one</div><div>two</div>
</body></html>"""


def test_the_text_part_reads_like_the_html() -> None:
    assert text_from_html(EMAIL) == (
        "Welcome, Ada\n"
        "\n"
        "Your plan is Pro & more.\n"
        "Enjoy it.\n"
        "\n"
        "- Fast\n"
        "- Read the docs (https://example.com/docs?x=1&y=2)\n"
        "\n"
        "Mail help@example.com or see https://example.com/.\n"
        "\n"
        "one\n"
        "two"
    )


def test_head_style_and_script_are_dropped() -> None:
    text = text_from_html(EMAIL)

    assert "track()" not in text and "color" not in text and "Welcome\n" not in text


def test_at_most_one_blank_line_in_a_row() -> None:
    assert text_from_html("<p>a</p><p></p><p></p><br><br><br><h2>b</h2>") == "a\n\nb"


def test_an_anchor_link_keeps_its_text_only() -> None:
    assert text_from_html('<a href="#top">Back to top</a>') == "Back to top"


# --- UTM ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "tagged"),
    [
        ("https://example.com/", "https://example.com/?utm_source=hub&utm_medium=email"),
        ("http://example.com/a?b=1", "http://example.com/a?b=1&utm_source=hub&utm_medium=email"),
        (
            "https://example.com/a?b=1#pricing",
            "https://example.com/a?b=1&utm_source=hub&utm_medium=email#pricing",
        ),
        (
            "https://example.com/?utm_source=newsletter",
            "https://example.com/?utm_source=newsletter&utm_medium=email",
        ),
        ("mailto:help@example.com", "mailto:help@example.com"),
        ("tel:+15550100", "tel:+15550100"),
        ("#top", "#top"),
        (
            "https://hub.example/v1/unsubscribe/tok.sig",
            "https://hub.example/v1/unsubscribe/tok.sig",
        ),
    ],
)
def test_utm_parameters_are_added_to_web_links_only(url: str, tagged: str) -> None:
    assert with_utm(url, UTM) == tagged


def test_utm_keys_may_leave_out_their_prefix() -> None:
    assert with_utm("https://example.com/", {"campaign": "spring"}) == (
        "https://example.com/?utm_campaign=spring"
    )


def test_links_in_html_get_utm_parameters_escaped_as_html() -> None:
    html = (
        '<p><a class="btn" href="https://example.com/a?b=1&amp;c=2">Go</a> '
        "<a href='https://example.com/b'>B</a> <a href=https://example.com/c>C</a> "
        '<a href="mailto:x@example.com">mail</a> <a href="#top">top</a> '
        '<a href="https://hub.example/v1/unsubscribe/abc">unsubscribe</a></p>'
    )

    assert add_utm(html, UTM) == (
        '<p><a class="btn" href="https://example.com/a?b=1&amp;c=2&amp;utm_source=hub'
        '&amp;utm_medium=email">Go</a> '
        "<a href='https://example.com/b?utm_source=hub&amp;utm_medium=email'>B</a> "
        '<a href="https://example.com/c?utm_source=hub&amp;utm_medium=email">C</a> '
        '<a href="mailto:x@example.com">mail</a> <a href="#top">top</a> '
        '<a href="https://hub.example/v1/unsubscribe/abc">unsubscribe</a></p>'
    )


def test_only_link_targets_change_in_html() -> None:
    html = '<img src="https://example.com/logo.png"><p>https://example.com/</p>'

    assert add_utm(html, UTM) == html


def test_bare_urls_in_text_get_utm_parameters_without_their_punctuation() -> None:
    text = (
        "Read https://example.com/docs. Or the guide (https://example.com/guide), "
        "or stop: https://hub.example/v1/unsubscribe/abc"
    )

    assert add_utm_text(text, {"utm_source": "hub"}) == (
        "Read https://example.com/docs?utm_source=hub. "
        "Or the guide (https://example.com/guide?utm_source=hub), "
        "or stop: https://hub.example/v1/unsubscribe/abc"
    )
