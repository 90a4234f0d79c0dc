"""imageMogr2 / imageView2 rules: one table of rule -> typed pipeline, round trips, and a table of bad rules."""

from __future__ import annotations

from typing import get_args

import pytest

from mediajobs.errors import MediaJobsError
from mediajobs.media.mogr2 import (
    MAX_STAGES,
    AutoOrient,
    BadRule,
    Blur,
    Bright,
    Cgif,
    Contrast,
    Crop,
    Cut,
    Dx,
    Dy,
    Flip,
    FlipDirection,
    Format,
    Gravity,
    GravityValue,
    Grayscale,
    IgnoreError,
    ImageFormat,
    Info,
    InfoKind,
    Interlace,
    Iradius,
    LQuality,
    Minisize,
    Mogr2,
    Op,
    Pad,
    Pipeline,
    Quality,
    Rotate,
    RQuality,
    Rradius,
    Scrop,
    Sharpen,
    SizeLimit,
    Stage,
    Strip,
    Style,
    ThumbForm,
    Thumbnail,
    View2,
    parse,
    render,
)

T = ThumbForm


def m(*ops: Op) -> Pipeline:
    """One imageMogr2 stage."""
    return Pipeline((Mogr2(ops),))


def p(*stages: Stage) -> Pipeline:
    return Pipeline(stages)


# (rule as a client writes it, expected pipeline, canonical rendering or None when it is the rule itself)
CASES: list[tuple[str, Pipeline, str | None]] = [
    # thumbnail: every form of the spec's table (section 3.2)
    ("imageMogr2/thumbnail/!50p", m(Thumbnail(T.SCALE, percent=50)), None),
    ("imageMogr2/thumbnail/!1000p", m(Thumbnail(T.SCALE, percent=1000)), None),
    ("imageMogr2/thumbnail/!50px", m(Thumbnail(T.SCALE_WIDTH, percent=50)), None),
    ("imageMogr2/thumbnail/!x50p", m(Thumbnail(T.SCALE_HEIGHT, percent=50)), None),
    ("imageMogr2/thumbnail/600x", m(Thumbnail(T.WIDTH, width=600)), None),
    ("imageMogr2/thumbnail/x400", m(Thumbnail(T.HEIGHT, height=400)), None),
    ("imageMogr2/thumbnail/600x600", m(Thumbnail(T.FIT, width=600, height=600)), None),
    ("imageMogr2/thumbnail/!600x600r", m(Thumbnail(T.COVER, width=600, height=600)), None),
    (
        "imageMogr2/thumbnail/600x600^",
        m(Thumbnail(T.COVER, width=600, height=600)),
        "imageMogr2/thumbnail/!600x600r",
    ),
    ("imageMogr2/thumbnail/600x600!", m(Thumbnail(T.EXACT, width=600, height=600)), None),
    ("imageMogr2/thumbnail/600x600>", m(Thumbnail(T.SHRINK, width=600, height=600)), None),
    ("imageMogr2/thumbnail/2400x2400<", m(Thumbnail(T.ENLARGE, width=2400, height=2400)), None),
    ("imageMogr2/thumbnail/240000@", m(Thumbnail(T.AREA, area=240000)), None),
    ("imageMogr2/thumbnail/20000x20000", m(Thumbnail(T.FIT, width=20000, height=20000)), None),
    ("imageMogr2/thumbnail/0600x", m(Thumbnail(T.WIDTH, width=600)), "imageMogr2/thumbnail/600x"),
    # thumbnail + pad (+ colour as URL-safe base64 of #RRGGBB, padded or not, anywhere in the stage)
    (
        "imageMogr2/thumbnail/600x600/pad/1",
        m(Thumbnail(T.FIT, width=600, height=600), Pad(True)),
        None,
    ),
    (
        "imageMogr2/thumbnail/600x600/pad/1/color/I0ZGRkZGRg",
        m(Thumbnail(T.FIT, width=600, height=600), Pad(True, "#FFFFFF")),
        None,
    ),
    (
        "imageMogr2/thumbnail/600x600/pad/1/color/IzNEM0QzRA==",
        m(Thumbnail(T.FIT, width=600, height=600), Pad(True, "#3D3D3D")),
        "imageMogr2/thumbnail/600x600/pad/1/color/IzNEM0QzRA",
    ),
    (
        "imageMogr2/color/IzNkM2QzZA/thumbnail/600x600/pad/1",
        m(Thumbnail(T.FIT, width=600, height=600), Pad(True, "#3D3D3D")),
        "imageMogr2/thumbnail/600x600/pad/1/color/IzNEM0QzRA",
    ),
    ("imageMogr2/pad/0", m(Pad(False)), None),
    # cropping
    ("imageMogr2/crop/300x200", m(Crop(300, 200)), None),
    ("imageMogr2/crop/300x", m(Crop(300, None)), None),
    ("imageMogr2/crop/x200", m(Crop(None, 200)), None),
    ("imageMogr2/crop/!300x200a10a20", m(Crop(300, 200, 10, 20)), None),
    ("imageMogr2/crop/!300x200-10a20", m(Crop(300, 200, -10, 20)), None),
    ("imageMogr2/crop/!300xa0-5", m(Crop(300, None, 0, -5)), None),
    (
        "imageMogr2/gravity/southeast/crop/300x300/dx/10/dy/20",
        m(Gravity(GravityValue.SOUTHEAST), Crop(300, 300), Dx(10), Dy(20)),
        None,
    ),
    ("imageMogr2/cut/300x200x10x0", m(Cut(300, 200, 10, 0)), None),
    ("imageMogr2/scrop/300x300", m(Scrop(300, 300)), None),
    ("imageMogr2/iradius/100", m(Iradius(100)), None),
    ("imageMogr2/rradius/20", m(Rradius(20)), None),
    # rotation
    ("imageMogr2/rotate/0", m(Rotate(0)), None),
    ("imageMogr2/rotate/360", m(Rotate(360)), None),
    ("imageMogr2/auto-orient", m(AutoOrient()), None),
    ("imageMogr2/flip/vertical", m(Flip(FlipDirection.VERTICAL)), None),
    ("imageMogr2/flip/horizontal", m(Flip(FlipDirection.HORIZONTAL)), None),
    # formats and output options
    *((f"imageMogr2/format/{f.value}", m(Format(f)), None) for f in ImageFormat),
    ("imageMogr2/format/jpeg", m(Format(ImageFormat.JPG)), "imageMogr2/format/jpg"),
    ("imageMogr2/cgif/1", m(Cgif(1)), None),
    ("imageMogr2/cgif/100", m(Cgif(100)), None),
    ("imageMogr2/interlace/1", m(Interlace(True)), None),
    ("imageMogr2/interlace/0", m(Interlace(False)), None),
    ("imageMogr2/quality/80", m(Quality(80)), None),
    ("imageMogr2/quality/90!", m(Quality(90, exact=True)), None),
    ("imageMogr2/quality/0", m(Quality(0)), None),
    ("imageMogr2/rquality/80", m(RQuality(80)), None),
    ("imageMogr2/lquality/100", m(LQuality(100)), None),
    ("imageMogr2/size-limit/15k", m(SizeLimit(15, "k")), None),
    ("imageMogr2/size-limit/2m!", m(SizeLimit(2, "m", keep_original=True)), None),
    ("imageMogr2/ignore-error/1", m(IgnoreError()), None),
    ("imageMogr2/minisize/1", m(Minisize(1)), None),
    ("imageMogr2/strip", m(Strip()), None),
    # filters
    ("imageMogr2/blur/8x5", m(Blur(8, 5)), None),
    ("imageMogr2/blur/50x1", m(Blur(50, 1)), None),
    ("imageMogr2/sharpen/70", m(Sharpen(70)), None),
    ("imageMogr2/sharpen/10", m(Sharpen(10)), None),
    ("imageMogr2/sharpen/300", m(Sharpen(300)), None),
    ("imageMogr2/bright/-100", m(Bright(-100)), None),
    ("imageMogr2/bright/100", m(Bright(100)), None),
    ("imageMogr2/contrast/-20", m(Contrast(-20)), None),
    ("imageMogr2/grayscale/1", m(Grayscale(True)), None),
    ("imageMogr2/grayscale/0", m(Grayscale(False)), None),
    # whole stages and pipelines
    ("imageMogr2", m(), None),
    (
        "imageMogr2/thumbnail/!50p/crop/300x300/gravity/center/rotate/90/format/webp/quality/80",
        m(
            Thumbnail(T.SCALE, percent=50),
            Crop(300, 300),
            Gravity(GravityValue.CENTER),
            Rotate(90),
            Format(ImageFormat.WEBP),
            Quality(80),
        ),
        None,
    ),
    ("imageMogr2/rotate/90/rotate/180", m(Rotate(90), Rotate(180)), None),
    (
        "imageMogr2/thumbnail/!50p|imageMogr2/format/webp",
        p(Mogr2((Thumbnail(T.SCALE, percent=50),)), Mogr2((Format(ImageFormat.WEBP),))),
        None,
    ),
    (
        "imageMogr2/auto-orient/strip|imageMogr2/thumbnail/!50p|imageInfo",
        p(
            Mogr2((AutoOrient(), Strip())),
            Mogr2((Thumbnail(T.SCALE, percent=50),)),
            Info(InfoKind.IMAGE_INFO),
        ),
        None,
    ),
    ("imageInfo", p(Info(InfoKind.IMAGE_INFO)), None),
    ("exif", p(Info(InfoKind.EXIF)), None),
    ("imageAve", p(Info(InfoKind.IMAGE_AVE)), None),
    ("style/thumb_200", p(Style("thumb_200")), None),
    ("|".join(["imageMogr2/strip"] * MAX_STAGES), p(*[Mogr2((Strip(),))] * MAX_STAGES), None),
    # imageView2 (section 3.10)
    *(
        (f"imageView2/{mode}/w/200/h/100", p(View2(mode=mode, width=200, height=100)), None)
        for mode in range(6)
    ),
    ("imageView2/2/w/200", p(View2(mode=2, width=200)), None),
    ("imageView2/2/h/100", p(View2(mode=2, height=100)), None),
    ("imageView2/format/png", p(View2(format=ImageFormat.PNG)), None),
    (
        "imageView2/1/w/200/h/100/format/jpg/q/80!/rq/70/lq/60/interlace/1/ignore-error/1",
        p(
            View2(
                mode=1,
                width=200,
                height=100,
                format=ImageFormat.JPG,
                quality=80,
                quality_exact=True,
                rquality=70,
                lquality=60,
                interlace=True,
                ignore_error=True,
            )
        ),
        None,
    ),
    (
        "imageView2/2/format/jpeg/h/100/w/200/q/75",
        p(View2(mode=2, width=200, height=100, format=ImageFormat.JPG, quality=75)),
        "imageView2/2/w/200/h/100/format/jpg/q/75",
    ),
    (
        "imageView2/format/png|imageMogr2/rotate/90",
        p(View2(format=ImageFormat.PNG), Mogr2((Rotate(90),))),
        None,
    ),
]


@pytest.mark.parametrize(("rule", "expected", "canonical"), CASES, ids=[c[0] for c in CASES])
def test_parse(rule: str, expected: Pipeline, canonical: str | None) -> None:
    assert parse(rule) == expected


@pytest.mark.parametrize(("rule", "expected", "canonical"), CASES, ids=[c[0] for c in CASES])
def test_round_trip(rule: str, expected: Pipeline, canonical: str | None) -> None:
    parsed = parse(rule)
    text = render(parsed)
    assert text == (canonical or rule)
    assert parse(text) == parsed
    assert render(parse(text)) == text


def _ops(pipeline: Pipeline) -> list[Op]:
    return [op for stage in pipeline.stages if isinstance(stage, Mogr2) for op in stage.ops]


def test_table_covers_every_operation_and_form() -> None:
    ops = [op for _, pipeline, _ in CASES for op in _ops(pipeline)]
    assert {type(op) for op in ops} == set(get_args(Op))
    assert {op.form for op in ops if isinstance(op, Thumbnail)} == set(ThumbForm)
    assert {op.format for op in ops if isinstance(op, Format)} == set(ImageFormat)
    stages = {type(stage) for _, pipeline, _ in CASES for stage in pipeline.stages}
    assert stages == {Mogr2, View2, Info, Style}


# (rule, text the message must start with: the offending part)
BAD: list[tuple[str, str]] = [
    ("", ": the rule is empty"),
    ("imageMogr2/rotate/abc", "imageMogr2/rotate/abc: rotate takes an angle 0-360"),
    ("imageMogr2/rotate/361", "imageMogr2/rotate/361: rotate takes an angle 0-360"),
    ("imageMogr2/rotate/-90", "imageMogr2/rotate/-90: rotate"),
    ("imageMogr2/rotate/+90", "imageMogr2/rotate/+90: rotate"),
    ("imageMogr2/rotate/ 90", "imageMogr2/rotate/ 90: rotate"),
    (
        "imageMogr2/rotate/\u0669",
        "imageMogr2/rotate/\u0669: rotate",
    ),  # Arabic-Indic digit: int() would take it
    ("imageMogr2/rotate", "imageMogr2/rotate: rotate takes an angle"),
    ("imageMogr2/Rotate/90", "imageMogr2/Rotate: unknown operation"),
    ("imageMogr2/foo/1", "imageMogr2/foo: unknown operation"),
    ("imageMogr2//rotate/90", "imageMogr2/: empty operation"),
    ("imageMogr2/rotate/90/", "imageMogr2/: empty operation"),
    ("imageMogr2/rcrop/100x100", "imageMogr2/rcrop: rcrop is not supported"),
    ("imageMogr3/rotate/90", "imageMogr3/rotate/90: unknown stage"),
    ("imageMogr2/rotate/90|", ": empty stage"),
    ("watermark/1/image/aHR0cA", "watermark/1/image/aHR0cA: watermark is not supported"),
    ("imageInfo|imageMogr2/strip", "imageInfo: imageInfo must be the last stage"),
    ("|".join(["imageMogr2/strip"] * (MAX_STAGES + 1)), "imageMogr2/strip: a rule has at most 10 stages"),
    ("style/", "style/: style takes a name"),
    # thumbnail
    ("imageMogr2/thumbnail/!0p", "imageMogr2/thumbnail/!0p: thumbnail takes"),
    ("imageMogr2/thumbnail/!1001p", "imageMogr2/thumbnail/!1001p: thumbnail takes"),
    ("imageMogr2/thumbnail/!50", "imageMogr2/thumbnail/!50: !<Area> is not a CI form; write <Area>@"),
    ("imageMogr2/thumbnail/0x100", "imageMogr2/thumbnail/0x100: thumbnail takes"),
    ("imageMogr2/thumbnail/x", "imageMogr2/thumbnail/x: thumbnail takes"),
    ("imageMogr2/thumbnail/100x100r", "imageMogr2/thumbnail/100x100r: thumbnail takes"),
    ("imageMogr2/thumbnail/0@", "imageMogr2/thumbnail/0@: thumbnail takes"),
    ("imageMogr2/thumbnail/50%", "imageMogr2/thumbnail/50%: thumbnail takes"),
    ("imageMogr2/thumbnail/99999999999x1", "imageMogr2/thumbnail/99999999999x1: thumbnail takes"),
    # crop family
    ("imageMogr2/crop/x", "imageMogr2/crop/x: crop takes"),
    ("imageMogr2/crop/0x10", "imageMogr2/crop/0x10: crop takes"),
    ("imageMogr2/crop/!300x200a10", "imageMogr2/crop/!300x200a10: crop takes"),
    ("imageMogr2/cut/300x200x10", "imageMogr2/cut/300x200x10: cut takes"),
    ("imageMogr2/cut/0x200x10x10", "imageMogr2/cut/0x200x10x10: cut takes"),
    ("imageMogr2/scrop/300", "imageMogr2/scrop/300: scrop takes"),
    ("imageMogr2/iradius/0", "imageMogr2/iradius/0: iradius takes a radius >= 1"),
    ("imageMogr2/rradius/r", "imageMogr2/rradius/r: rradius takes a radius >= 1"),
    ("imageMogr2/gravity/middle", "imageMogr2/gravity/middle: gravity takes one of"),
    ("imageMogr2/dx/-1", "imageMogr2/dx/-1: dx takes"),
    ("imageMogr2/dy/a", "imageMogr2/dy/a: dy takes"),
    # pad and colour
    ("imageMogr2/pad/2", "imageMogr2/pad/2: pad takes 0 or 1"),
    ("imageMogr2/thumbnail/10x10/color/I0ZGRkZGRg", "imageMogr2/color/I0ZGRkZGRg: color only goes with pad"),
    ("imageMogr2/pad/1/color/I0ZGRg", "imageMogr2/color/I0ZGRg: color takes URL-safe base64 of #RRGGBB"),
    ("imageMogr2/pad/1/color/#FFFFFF", "imageMogr2/color/#FFFFFF: color takes"),
    ("imageMogr2/pad/1/color/I0ZG+kZGRg", "imageMogr2/color/I0ZG+kZGRg: color takes"),
    ("imageMogr2/pad/1/color", "imageMogr2/color/: color takes"),
    ("imageMogr2/pad/1/color/I0ZGRkZGRg/color/I0ZGRkZGRg", "imageMogr2/color/I0ZGRkZGRg: pad already has"),
    # rotation and flips
    ("imageMogr2/flip/diagonal", "imageMogr2/flip/diagonal: flip takes vertical or horizontal"),
    ("imageMogr2/auto-orient/1", "imageMogr2/1: unknown operation"),
    # output options
    ("imageMogr2/format/jpe", "imageMogr2/format/jpe: format takes one of"),
    ("imageMogr2/format/PNG", "imageMogr2/format/PNG: format takes one of"),
    ("imageMogr2/cgif/0", "imageMogr2/cgif/0: cgif takes a frame count 1-100"),
    ("imageMogr2/cgif/101", "imageMogr2/cgif/101: cgif takes"),
    ("imageMogr2/interlace/2", "imageMogr2/interlace/2: interlace takes 0 or 1"),
    ("imageMogr2/quality/101", "imageMogr2/quality/101: quality takes a quality 0-100"),
    ("imageMogr2/quality/80!!", "imageMogr2/quality/80!!: quality takes"),
    ("imageMogr2/rquality/80!", "imageMogr2/rquality/80!: rquality takes a quality 0-100"),
    ("imageMogr2/lquality/200", "imageMogr2/lquality/200: lquality takes"),
    ("imageMogr2/size-limit/15", "imageMogr2/size-limit/15: size-limit takes"),
    ("imageMogr2/size-limit/0k", "imageMogr2/size-limit/0k: size-limit takes"),
    ("imageMogr2/size-limit/15g", "imageMogr2/size-limit/15g: size-limit takes"),
    ("imageMogr2/ignore-error/0", "imageMogr2/ignore-error/0: ignore-error takes 1"),
    ("imageMogr2/minisize/x", "imageMogr2/minisize/x: minisize takes"),
    # filters
    ("imageMogr2/blur/51x5", "imageMogr2/blur/51x5: blur takes"),
    ("imageMogr2/blur/8x0", "imageMogr2/blur/8x0: blur takes"),
    ("imageMogr2/blur/8", "imageMogr2/blur/8: blur takes"),
    ("imageMogr2/sharpen/9", "imageMogr2/sharpen/9: sharpen takes a strength 10-300"),
    ("imageMogr2/sharpen/301", "imageMogr2/sharpen/301: sharpen takes"),
    ("imageMogr2/bright/101", "imageMogr2/bright/101: bright takes a value -100..100"),
    ("imageMogr2/contrast/--1", "imageMogr2/contrast/--1: contrast takes"),
    ("imageMogr2/grayscale/yes", "imageMogr2/grayscale/yes: grayscale takes 0 or 1"),
    # imageView2
    ("imageView2", "imageView2: imageView2 needs a mode or an option"),
    ("imageView2/6/w/100", "imageView2/6: the mode is 0-5"),
    ("imageView2/2", "imageView2/2: a mode needs w or h"),
    ("imageView2/w/100", "imageView2/w/100: w and h need a mode"),
    ("imageView2/2/w/abc", "imageView2/w/abc: w takes a size >= 1"),
    ("imageView2/2/w/100/w/200", "imageView2/w: w is given twice"),
    ("imageView2/2/w/100/h", "imageView2/h: h needs a value"),
    ("imageView2/2/w/100/x/1", "imageView2/x: unknown option"),
    ("imageView2/format/gif2", "imageView2/format/gif2: format takes one of"),
    ("imageView2/format/png/q/101", "imageView2/q/101: q takes a quality 0-100"),
    ("imageView2/format/png/rq/80!", "imageView2/rq/80!: rq takes a quality 0-100"),
    ("imageView2/format/png/interlace/yes", "imageView2/interlace/yes: interlace takes 0 or 1"),
    ("imageView2/format/png/ignore-error/0", "imageView2/ignore-error/0: ignore-error takes 1"),
]


@pytest.mark.parametrize(("rule", "message"), BAD, ids=[b[0][:60] or "<empty>" for b in BAD])
def test_bad_rule(rule: str, message: str) -> None:
    with pytest.raises(BadRule) as caught:
        parse(rule)
    assert caught.value.code == "InvalidArgument"
    assert caught.value.http_status == 400
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.message == str(caught.value)


def test_bad_rule_is_a_value_error_and_a_wire_error() -> None:
    assert issubclass(BadRule, ValueError)
    assert issubclass(BadRule, MediaJobsError)
    err = BadRule("imageMogr2/rotate/abc", "rotate takes an angle 0-360")
    assert (err.part, err.reason) == ("imageMogr2/rotate/abc", "rotate takes an angle 0-360")


def test_long_input_is_shortened_in_the_message() -> None:
    with pytest.raises(BadRule) as caught:
        parse("imageMogr2/" + "a" * 5000)
    assert len(str(caught.value)) < 300
    assert caught.value.part.endswith("a" * 10)


# Values built by hand are checked the same way, so a pipeline that exists always renders to a rule that parses.
@pytest.mark.parametrize(
    "build",
    [
        lambda: Rotate(361),
        lambda: Thumbnail(T.SCALE, percent=0),
        lambda: Thumbnail(T.FIT, width=10),  # FIT needs both sides
        lambda: Thumbnail(T.WIDTH, width=10, percent=5),  # a field the form does not use
        lambda: Crop(None, None),
        lambda: Crop(10, 10, dx=1),
        lambda: Pad(True, "white"),
        lambda: Quality(101),
        lambda: SizeLimit(1, "g"),
        lambda: View2(mode=1),
        lambda: View2(),
        lambda: Style("a/b"),
        lambda: Pipeline(()),
        lambda: Pipeline((Info(InfoKind.EXIF), Mogr2())),
    ],
)
def test_invalid_values_cannot_be_built(build: object) -> None:
    assert callable(build)
    with pytest.raises(BadRule):
        build()


def test_pad_colour_is_normalised_to_upper_case() -> None:
    assert Pad(True, "#3d3d3d") == Pad(True, "#3D3D3D")
    assert render(m(Pad(True, "#3d3d3d"))) == "imageMogr2/pad/1/color/IzNEM0QzRA"


def test_size_limit_bytes() -> None:
    assert SizeLimit(15, "k").limit_bytes == 15 * 1024
    assert SizeLimit(2, "m").limit_bytes == 2 * 1024 * 1024
