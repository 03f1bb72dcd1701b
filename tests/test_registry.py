"""recframe.registry: registration, lookup, did-you-mean errors."""

import pytest

from recframe import registry
from recframe.registry import Registry, RegistryError


def test_register_default_name_and_lookup():
    reg = Registry("model")

    @reg.register()
    class DSSM:
        pass

    @reg.register("Other")
    class Impl:
        pass

    assert reg.get("DSSM") is DSSM
    assert reg.get("Other") is Impl
    assert "DSSM" in reg and "Impl" not in reg
    assert reg.names() == ["DSSM", "Other"]
    assert list(reg) == ["DSSM", "Other"] and len(reg) == 2


def test_unknown_name_suggests_and_lists_known():
    reg = Registry("model")
    for name in ("DSSM", "DSSMV2", "MIND"):
        reg.register(name)(type(name, (), {}))
    with pytest.raises(RegistryError) as e:
        reg.get("DSSMV3")
    msg = str(e.value)
    assert isinstance(e.value, KeyError)
    assert "unknown model 'DSSMV3'" in msg
    assert "Did you mean 'DSSMV2'" in msg
    assert "Known: DSSM, DSSMV2, MIND." in msg


def test_case_insensitive_suggestion_and_empty_registry():
    reg = Registry("sampler")

    @reg.register()
    class NegativeSampler:
        pass

    with pytest.raises(RegistryError, match="Did you mean 'NegativeSampler'"):
        reg.get("negativesampler")
    with pytest.raises(RegistryError, match=r"Known: \(none registered\)"):
        Registry("dataset").get("X")


def test_duplicate_name_refused_unless_override():
    reg = Registry("feature")

    class A:
        pass

    class B:
        pass

    reg.register("X")(A)
    reg.register("X")(A)  # same object again: no-op
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("X")(B)
    reg.register("X", override=True)(B)
    assert reg.get("X") is B


def test_module_registries_and_user_extension():
    for name in ("MODELS", "FEATURES", "SAMPLERS", "LOSSES", "METRICS", "SEQUENCE_ENCODERS", "INITIALIZERS",
                 "DATA_SOURCES", "LR_SCHEDULES", "OPTIMIZERS"):
        assert isinstance(getattr(registry, name), Registry)

    @registry.MODELS.register()
    class _UserModelForTest:
        pass

    try:
        assert registry.MODELS.get("_UserModelForTest") is _UserModelForTest
    finally:
        registry.MODELS._entries.pop("_UserModelForTest")


def test_builtin_losses_metrics_and_initializers_registered():
    import recframe.models  # noqa: F401  (registers)

    assert registry.LOSSES.names() == ["BinaryCrossEntropy", "SoftmaxCrossEntropy"]
    assert registry.METRICS.names() == ["AUC", "Accuracy", "InBatchRecallAtK"]
    assert registry.INITIALIZERS.names() == ["NormalInitializer", "UniformInitializer", "XavierUniformInitializer"]
    assert registry.SAMPLERS.names() == ["HardNegativeSampler", "NegativeSampler", "NegativeSamplerV2", "WholePoolSampler"]


def test_builtin_schedules_and_optimizers_registered():
    import recframe.training  # noqa: F401  (registers)

    assert {"ConstantLearningRate", "ExponentialDecayLearningRate", "CosineLearningRate"} <= set(
        registry.LR_SCHEDULES.names()
    )
    assert {"AdamOptimizer", "AdamWOptimizer", "AdagradOptimizer", "SGDOptimizer"} <= set(
        registry.OPTIMIZERS.names()
    )
