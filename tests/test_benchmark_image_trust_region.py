"""The image trust-region benchmark runs the walkthrough's own settings: it reads them from
benchmarks/_walkthrough_env.sh with bash, so the two can never drift apart."""

from _benchmarks import BENCHMARKS, benchmark_module


def test_walkthrough_settings_are_read_from_the_shell_file():
    with benchmark_module("image_trust_region") as module:
        settings = module.walkthrough_settings()
    assert set(settings) == {"M", "FAST", "SFT"}
    assert "data.name=mnist" in settings["M"] and "data.image_size=14" in settings["M"]
    assert "sampler.kind=fastdpm" in settings["FAST"] and "sampler.steps=10" in settings["FAST"]
    assert settings["SFT"][:2] == ["--preset", "images"] and "finetune.batch_size=32" in settings["SFT"]
    shell = (BENCHMARKS / "_walkthrough_env.sh").read_text()
    for group in settings.values():  # every word is the file's, none lost to the split
        assert all(word.split("=")[-1].split("/")[-1] in shell for word in group)
