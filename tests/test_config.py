import pytest

from cnn_apps.config import flatten, load_config, parse_override
from cnn_apps.errors import ConfigError


def test_defaults_then_file_then_overrides(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("epochs: 7\ndata:\n  image_size: [48, 48]\n")
    config = load_config("classification", user, ["epochs=3", "data.path=/x", "backbone=lenet5",
                                                  "augment.rotation=0"])
    assert config["epochs"] == 3                      # override beats file
    assert config["data"]["image_size"] == [48, 48]   # file beats default
    assert config["data"]["path"] == "/x"
    assert config["backbone"] == "lenet5"
    assert config["augment"]["rotation"] == 0
    assert config["data"]["dataset"] == "digits"      # untouched default


def test_override_values_are_parsed_as_yaml():
    assert parse_override("epochs=3") == ("epochs", 3)
    assert parse_override("learning_rate=1e-3") == ("learning_rate", 1e-3)
    assert parse_override("weights=null") == ("weights", None)
    assert parse_override("coarse_groups=[[0,1],[2]]") == ("coarse_groups", [[0, 1], [2]])
    assert parse_override("data.path=/a=b") == ("data.path", "/a=b")


def test_unknown_key_lists_valid_keys_and_suggests():
    with pytest.raises(ConfigError) as info:
        load_config("classification", overrides=["epoch=3"])
    message = str(info.value)
    assert "unknown config key 'epoch'" in message
    assert "Did you mean: epochs" in message
    assert "data.path" in message and "learning_rate" in message


def test_unknown_nested_key_in_file_names_the_file(tmp_path):
    user = tmp_path / "bad.yaml"
    user.write_text("data:\n  pth: /x\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config("classification", user)


@pytest.mark.parametrize("text", ["epochs", "=3"])
def test_malformed_override(text):
    with pytest.raises(ConfigError):
        load_config("classification", overrides=[text])


def test_setting_a_section_to_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="is a section"):
        load_config("classification", overrides=["data=3"])


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
