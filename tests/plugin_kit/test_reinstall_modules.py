"""Which modules a live reinstall drops from the kernel's process (security/reinstall.py): those of
the files the changed distribution installed, never another distribution's, though they share a
namespace package, and never the kernel's."""

from __future__ import annotations

import sys
import textwrap

from cortex.kernel.security.reinstall import forget_modules, restore_modules

from ..conftest import pip_install


def distribution(root, name: str, files: dict[str, str]) -> None:
    (root / name).mkdir()
    (root / name / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "0.1.0"
        [tool.setuptools.packages.find]
        where = ["."]
        include = ["acme*"]
        [tool.setuptools]
        py-modules = {[f[:-3] for f in files if "/" not in f]!r}
        """))
    for path, text in files.items():
        (root / name / path).parent.mkdir(parents=True, exist_ok=True)
        (root / name / path).write_text(text)


def test_only_the_changed_distributions_modules_are_forgotten(tmp_path):
    distribution(tmp_path, "acme-one", {"acme/one/__init__.py": "", "acme/one/helper.py": "VALUE = 1\n"})
    distribution(tmp_path, "acme-two", {"acme/two/__init__.py": "VALUE = 2\n"})
    distribution(tmp_path, "solo-plugin", {"solo_plugin.py": "VALUE = 3\n"})
    sites = [str(tmp_path / "site" / name) for name in ("acme-one", "acme-two", "solo-plugin")]  # acme: one namespace over two
    for site in sites:
        pip_install("--target", site, str(tmp_path / site.rpartition("/")[2]))
    sys.path[:0] = sites
    try:
        import acme.one.helper
        import acme.two
        import solo_plugin

        kernel_modules = {n for n in sys.modules if n.startswith("cortex.")}
        taken = forget_modules("acme-one")
        assert set(taken) == {"acme.one", "acme.one.helper"}  # not the namespace acme, not acme.two
        assert "acme.two" in sys.modules and "solo_plugin" in sys.modules
        assert kernel_modules <= set(sys.modules)
        import acme.one.helper as again

        assert again is not taken["acme.one.helper"]  # imported afresh, from the files installed now
        restore_modules("acme-one", taken)
        assert sys.modules["acme.one.helper"] is taken["acme.one.helper"]

        assert set(forget_modules("solo-plugin")) == {"solo_plugin"}  # a lone module: itself only
        assert forget_modules("cortex-os") == {}  # never the kernel
        assert "acme.two" in sys.modules and sys.modules["acme.two"] is acme.two
        del solo_plugin
    finally:
        for site in sites:
            sys.path.remove(site)
        for name in [n for n in sys.modules if n == "acme" or n.startswith(("acme.", "solo_plugin"))]:
            del sys.modules[name]


def test_an_editable_projects_own_names_are_forgotten_and_nothing_else_in_its_folder(tmp_path):
    """Installed editable, a distribution lists none of its files: the modules of its project folder
    are its own, under the top-level names it installed (never another module that lives there),
    wherever the folder is (a space in its path is %20 in pip's direct_url.json)."""
    import json

    project, site = tmp_path / "my project", tmp_path / "site"
    (project / "src").mkdir(parents=True)
    (project / "src" / "edited_plugin.py").write_text("VALUE = 1\n")
    (project / "src" / "tool_beside_it.py").write_text("VALUE = 2\n")
    info = site / "edited_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edited-plugin\nVersion: 0.1\n")
    (info / "RECORD").write_text("")
    (info / "top_level.txt").write_text("edited_plugin\n")
    (info / "direct_url.json").write_text(json.dumps({"url": project.resolve().as_uri(), "dir_info": {"editable": True}}))
    assert "%20" in (info / "direct_url.json").read_text()
    sys.path[:0] = [str(site), str(project / "src")]
    try:
        import edited_plugin
        import tool_beside_it

        assert forget_modules("edited-plugin") == {"edited_plugin": edited_plugin}
        assert sys.modules["tool_beside_it"] is tool_beside_it
    finally:
        sys.path.remove(str(site))
        sys.path.remove(str(project / "src"))
        for name in ("edited_plugin", "tool_beside_it"):
            sys.modules.pop(name, None)
