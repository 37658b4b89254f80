"""Shape inference and cfg validation on tiny synthetic cfgs."""
import pytest

from dncompress.cfg import parse_cfg
from dncompress.errors import DncompressError
from dncompress.layers import LAYERS
from dncompress.network import Network


def build(body: str, size: int = 32) -> Network:
    return Network(parse_cfg(f"[net]\nwidth={size}\nheight={size}\nchannels=3\n" + body, "t.cfg"), "t.cfg")


def test_registry_covers_the_documented_sections():
    assert {"convolutional", "quantize_convolutional", "maxpool", "upsample", "route", "shortcut", "yolo",
            "region", "dropout", "avgpool"} <= set(LAYERS)


@pytest.mark.parametrize("body, shape", [
    ("[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\n", (8, 16, 16)),
    ("[convolutional]\nfilters=8\nsize=3\nstride=1\npadding=0\n", (8, 30, 30)),
    ("[maxpool]\nsize=2\nstride=2\n", (3, 16, 16)),
    ("[maxpool]\nsize=2\nstride=1\n", (3, 32, 32)),
    ("[maxpool]\nsize=3\nstride=2\n", (3, 16, 16)),
    ("[upsample]\nstride=2\n", (3, 64, 64)),
    ("[avgpool]\n", (3, 1, 1)),
    ("[convolutional]\nfilters=8\nsize=1\n[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-2\n", (8, 32, 32)),
])
def test_shapes(body, shape):
    assert build(body).layers[-1].out_shape == shape


def test_route_groups_take_the_requested_half():
    net = build("[convolutional]\nfilters=8\nsize=1\n[route]\nlayers=-1\ngroups=2\ngroup_id=1\n"
                "[route]\nlayers=-1,-2\n")
    assert net.layers[1].out_shape == (4, 32, 32)
    assert net.layers[1].channel_slices() == [slice(4, 8)]
    assert net.layers[2].out_shape == (12, 32, 32)
    assert net.layers[2].inputs == [1, 0]


@pytest.mark.parametrize("body, message", [
    ("[convolutional]\nfilters=-1\nsize=3\n", r"line 6 \[convolutional\] filters: layer 0: filters=-1"),
    ("[convolutional]\nfilters=8\nsize=0\n", "size=0 must be"),
    ("[convolutional]\nfilters=1000000000\nsize=1\n", "filters=1000000000 must be"),
    ("[route]\nlayers=-5\n", "not an earlier layer"),
    ("[convolutional]\nfilters=4\nsize=1\n[shortcut]\nfrom=-2\n", "not an earlier layer"),
    ("[convolutional]\nfilters=4\nsize=1\n[convolutional]\nfilters=8\nsize=1\n[shortcut]\nfrom=-2\nweights_type=per_channel\n",
     "weights_type=per_channel changes the network"),
    ("[convolutional]\nfilters=4\nsize=1\nactivation=gelu\n", "unknown activation 'gelu'"),
    ("[convolutional]\nfilters=8\nsize=1\n[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n",
     "different spatial sizes"),
    ("[bogus]\n", r"unknown section \[bogus\]; supported: .*\[convolutional\]"),
    ("[convolutional]\nfilters=10\nsize=1\n[yolo]\nmask=0,1\nanchors=1,2,3,4\nclasses=80\n", "170"),
    # a huge num= with a mask= is only the anchors' count (found by the slow fuzz: it once allocated it)
    ("[convolutional]\nfilters=10\nsize=1\n[yolo]\nmask=0\nanchors=1,2\nnum=1000000000\nclasses=80\n", "85"),
    ("[convolutional]\nfilters=10\nsize=1\n[yolo]\nanchors=1,2\nnum=1000000000\nclasses=80\n",
     r"num=1000000000 without mask= needs 1 to 1"),
])
def test_bad_cfgs_give_clear_errors(body, message):
    with pytest.raises(DncompressError, match=message) as err:
        build(body)
    assert str(err.value).startswith("t.cfg:line")


def test_missing_net_section():
    with pytest.raises(DncompressError, match=r"first section must be \[net\]"):
        Network(parse_cfg("[convolutional]\nfilters=3\n"), "x.cfg")
