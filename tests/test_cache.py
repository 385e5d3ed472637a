"""The persistent compilation cache is keyed by the host's instruction set
(svgx/cache.py): JAX's own key does not hold the CPU's features."""

import jax

import svgx
from svgx import cache

X86 = """processor\t: 0
vendor_id\t: {vendor}
model name\t: {model}
flags\t\t: {flags}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: {flags}
"""
ARM = "processor\t: 0\nFeatures\t: {flags}\nCPU implementer\t: 0x41\n"


def fingerprint(tmp_path, text, name="cpuinfo"):
    path = tmp_path / name
    path.write_text(text)
    return cache.cpu_fingerprint(path)


def test_hosts_with_the_same_features_share_a_directory_and_others_do_not(tmp_path):
    intel = fingerprint(
        tmp_path, X86.format(vendor="GenuineIntel", model="Xeon", flags="sse avx2 fma")
    )
    # The instruction-set extensions decide, in any order; the vendor's and model's names
    # and the flags that describe the kernel or the hypervisor do not.
    kernel = "fma hypervisor sse avx2 md_clear"
    same = fingerprint(tmp_path, X86.format(vendor="AuthenticAMD", model="EPYC", flags=kernel))
    more = fingerprint(
        tmp_path, X86.format(vendor="GenuineIntel", model="Xeon", flags="sse avx2 fma avx512f")
    )
    arm = fingerprint(tmp_path, ARM.format(flags="fp asimd sse avx2 fma"))
    assert intel == same
    assert len({intel, more, arm}) == 3
    # Without a cpuinfo the processor's name stands in; still a valid directory name.
    missing = cache.cpu_fingerprint(tmp_path / "absent")
    assert missing not in (intel, more, arm) and "/" not in missing


def test_the_cache_directory_is_the_fingerprints_subdirectory(tmp_path, monkeypatch):
    previous = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "env"))
    try:
        explicit = svgx.enable_compilation_cache(tmp_path / "given")
        assert explicit == tmp_path / "given" / cache.cpu_fingerprint()
        assert jax.config.jax_compilation_cache_dir == str(explicit) and explicit.is_dir()
        from_env = svgx.enable_compilation_cache()
        assert from_env == tmp_path / "env" / cache.cpu_fingerprint()
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


def test_the_export_cache_lives_in_the_same_cpus_directory(tmp_path, monkeypatch):
    """Traced programs go to ``exported/`` of the compilation cache's directory, and to
    the same fingerprint's directory when no compilation cache is on."""
    from svgx import export_cache

    previous = jax.config.jax_compilation_cache_dir
    monkeypatch.delenv(export_cache.DIR_VAR, raising=False)
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert export_cache.directory() == tmp_path / cache.cpu_fingerprint() / "exported"
        on = svgx.enable_compilation_cache()
        assert export_cache.directory() == on / "exported"
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
