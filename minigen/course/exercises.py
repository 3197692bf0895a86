"""The graded tasks, and the generator of the student stubs in ``exercises/``.

One source of truth: each task is a function of the library itself, with its
body (or the part a student writes) between two marker lines::

    ### BEGIN SOLUTION
    ...
    ### END SOLUTION

and ``TASKS`` below is the one list of tasks. Everything else is derived from
it: the grading plugin registers the pytest marker of each task (``task3_2``),
and this generator writes the stubs and the task table of ``exercises/README.md``
(between its ``<!-- BEGIN TASK LIST`` and ``<!-- END TASK LIST -->`` lines).
tests/course/test_grading.py checks that the markers, the graded tests, the
solution markers and the README agree with ``TASKS``.

The generator copies each task's function (signature, docstring, the lines
outside the markers) into one file per chapter and replaces the marked lines
by a hint and ``raise NotImplementedError("Task 5.1: ...")``. The imports a
file needs are found from the names the functions use; it refuses to import a
``_private`` name (give the helper a public name instead). Run it as

    python -m minigen.course.exercises                 # rewrite exercises/ (the stubs and the README's task list)
    python -m minigen.course.exercises --check         # exit 1 if exercises/ differs (CI)
    python -m minigen.course.exercises --solutions --out DIR   # the same files with the solutions in
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
README = "README.md"  # in the exercises folder; its task list is generated, the rest is written by hand
LIST_BEGIN = "<!-- BEGIN TASK LIST: generated from TASKS by python -m minigen.course.exercises; do not edit -->"
LIST_END = "<!-- END TASK LIST -->"


@dataclass(frozen=True)
class Task:
    """One graded task: task ``id`` "3.2" is chapter 3's second; its pytest marker is ``task3_2``."""

    id: str
    module: str
    function: str
    title: str
    points: int
    hint: str

    @property
    def chapter(self) -> int:
        return int(self.id.split(".")[0])

    @property
    def marker(self) -> str:
        return "task" + self.id.replace(".", "_")

    @property
    def name(self) -> str:
        """How reports name the task."""
        return f"Task {self.id}: {self.title} ({self.function})"


# The exercise file of each chapter, in the book's numbering.
CHAPTERS = {
    1: ("ch1_chain_rule", "Images as probability distributions"),
    2: ("ch2_autograd", "Autograd from scratch"),
    3: ("ch3_masking", "Masking"),
    4: ("ch4_pixelcnn", "PixelCNN"),
    5: ("ch5_schedules", "Noise schedules"),
    6: ("ch6_ddpm", "DDPM"),
    7: ("ch7_timing", "Timing"),
    10: ("ch10_attention", "Attention: PixelSNAIL"),
}

_PIX, _DIFFUSION, _SNAIL = "minigen.models.pixelcnn", "minigen.models.diffusion", "minigen.models.pixelsnail"
_DDPM = "minigen.models.ddpm"
TASKS = (
    Task("1.1", "minigen.course.chain_rule", "chain_rule_log_prob", "chain-rule log-likelihood", 2,
         "loop over the pixels; p = table[i][prefix_index(images, i)]; add log p or log(1 - p)."),
    Task("1.2", "minigen.course.chain_rule", "conditionals_from_joint", "conditionals from the joint", 2,
         "reshape the joint to (2,) * D; sum out the later pixels; divide p(prefix, 1) by p(prefix)."),
    Task("1.3", "minigen.course.chain_rule", "sample_chain_rule", "sampling pixel by pixel", 2,
         "fill the pixels in order; each prefix index uses the pixels drawn so far."),
    Task("2.1", "minigen.engine.autograd", "unbroadcast", "undo broadcasting", 2,
         "sum the extra leading axes away, then sum (keepdims) every axis that is 1 in shape."),
    Task("2.2", "minigen.engine.ops", "mul_backward", "backward of mul", 1,
         "d(a*b)/da = b and d(a*b)/db = a, each times grad; None where needs is False."),
    Task("2.3", "minigen.engine.ops", "matmul_backward", "backward of matmul", 2,
         "dA = dY @ B^T, dB = A^T @ dY; transpose the last two axes with swapaxes(-1, -2)."),
    Task("2.4", "minigen.engine.autograd", "backward_order", "backward order (topological)", 3,
         "collect the functions with a to-do list (fn.inputs, x.creator), then sort by -generation."),
    Task("2.5", "minigen.engine.gradcheck", "central_difference", "central differences for gradcheck", 1,
         "set values[k] to v + eps, evaluate, to v - eps, evaluate, restore v."),
    Task("3.1", "minigen.engine.functional", "im2col", "im2col for conv2d", 3,
         "pad (NHWC), then for each output pixel copy its kh x kw x C window into one row."),
    Task("3.2", _PIX, "channel_groups", "colour groups of feature maps", 1,
         "channel k of n belongs to group floor(k * colors / n)."),
    Task("3.3", _PIX, "causal_mask", "masks A and B with colour groups", 3,
         "open rows above the centre and taps left of it; at the centre compare the groups."),
    Task("3.4", _PIX, "masked_conv", "a masked convolution's forward", 2,
         "convolve with the masked weight: F.conv2d(x, weight * mask, bias, padding=padding) "
         "(F.masked_conv2d does the same and skips the closed taps)."),
    Task("4.1", _PIX, "categorical_log_prob", "PixelCNN log-likelihood", 2,
         "F.cross_entropy(..., axis=1, reduction='none') gives -log p per sub-pixel; sum per image."),
    Task("4.2", "minigen.metrics", "bits_per_dim", "bits per dimension", 1,
         "one nat is 1 / ln 2 bits; divide by the number of sub-pixels too."),
    Task("4.3", _PIX, "sample_levels", "inverse-CDF sampling", 2,
         "softmax, cumulative sum, count the levels whose cumulative probability is <= u."),
    Task("4.4", _PIX, "naive_sampling_loop", "the sampling loop", 2,
         "three loops: rows, columns, colours; recompute the logits before every sub-pixel."),
    Task("4.5", _PIX, "gated_layer", "one Gated PixelCNN layer", 4,
         "v_pre = layer.conditioned(layer.vertical(v), labels); the horizontal pre-activation adds "
         "layer.v_to_h(v_pre); gate() both; h + layer.h_out(...) except in the first layer."),
    Task("4.6", _PIX, "cached_sampling_loop", "the cached sampling loop", 3,
         "one SamplingCache(H, W) for the whole run; model.start_row before each row; the loops of the naive "
         "sampler with model.logits_at(...).reshape(N, C, K)[:, c]."),
    Task("4.7", "minigen.train", "training_step", "one training step", 3,
         "loss, then optimizer.zero_grad(), loss.backward(), the optional clip, optimizer.step(); return the loss."),
    Task("5.1", _DIFFUSION, "linear_betas", "linear schedule", 1,
         "np.linspace from scale * 1e-4 to scale * 0.02 in float64."),
    Task("5.2", _DIFFUSION, "betas_from_alpha_bar", "betas from alpha_bar", 2,
         "evaluate alpha_bar at t / T for t = 0..T, take ratios of neighbours, clip at MAX_BETA."),
    Task("5.3", _DIFFUSION, "cosine_betas", "cosine schedule", 1,
         "pass alpha_bar(u) = cos((u + s) / (1 + s) * pi / 2) ** 2 to betas_from_alpha_bar."),
    Task("5.4", _DIFFUSION, "q_sample", "closed-form forward process", 2,
         "at_step(schedule.sqrt_alpha_bar, t, x0) is sqrt(alpha_bar_t) shaped for the images."),
    Task("6.1", _DIFFUSION, "x0_from_eps", "x0 from the predicted noise", 1,
         "solve q_sample's formula for x_0."),
    Task("6.2", _DIFFUSION, "posterior_mean", "posterior mean", 2,
         "the schedule has the two coefficients: mean_coef_x0 and mean_coef_xt."),
    Task("6.3", _DIFFUSION, "ancestral_step", "one reverse (ancestral) step", 2,
         "code step 0 is the last one: no noise there; elsewhere add sqrt(variance) * draw_noise()."),
    Task("6.4", _DIFFUSION, "ddim_step", "one DDIM step", 3,
         "compute sigma from eta first; it also shrinks the eps term."),
    Task("6.5", _DDPM, "simple_loss", "the training loss L_simple", 3,
         "t = draw_steps(0, T, N) (code steps 0..T-1), then the noise; q_sample; the target by model.prediction; "
         "F.mse_loss(model.net(xt, t, model.drop_labels(...)), target)."),
    Task("6.6", "minigen.models.unet", "res_block", "a U-Net residual block with its time step", 3,
         "norm1 with silu, conv1; add block.embed(F.silu(embedding)) reshaped to (N, out, 1, 1); norm2 with silu, "
         "conv2; add block.skip(x)."),
    Task("6.7", _DDPM, "guided_prediction", "classifier-free guidance", 1,
         "start from the unconditional output and move w times the difference towards the conditional one."),
    Task("7.1", "minigen.bench.timing", "measure", "timing with warm-up and synchronisation", 3,
         "untimed warm-up calls, then sync; time each repeat up to and including sync(device)."),
    Task("10.1", _SNAIL, "earlier_pixels", "the causal attention mask", 2,
         "entry (p, q) is q < p: a lower-triangular matrix without its diagonal (xp.tril, k=-1)."),
    Task("10.2", _SNAIL, "attend_to_cache", "one key/value-cached attention step", 3,
         "no keys: zeros of (N, heads, dv); else give q a length-1 query axis and use "
         "F.scaled_dot_product_attention (or softmax(q k^T / sqrt(dk)) v with Tensor ops)."),
)


def task_by_id(task_id: str) -> Task:
    for task in TASKS:
        if task.id == task_id:
            return task
    raise ValueError(f"unknown task {task_id!r}; the tasks are {', '.join(t.id for t in TASKS)}")


def reference_function(task: Task):
    """The library's own implementation of ``task`` (the reference solution)."""
    return getattr(importlib.import_module(task.module), task.function)


# ----------------------------------------------------------------------------
# Generating the chapter files


def task_source(task: Task, solution: bool) -> str:
    """The task's function as source text, with its solution (markers dropped) or a stub."""
    lines = textwrap.dedent(inspect.getsource(reference_function(task))).splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(starts) != 1 or len(ends) != 1 or starts[0] > ends[0]:
        raise ValueError(f"{task.module}.{task.function} needs exactly one '{BEGIN}' line "
                         f"followed by one '{END}' line (task {task.id})")
    begin, end = starts[0], ends[0]
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    if solution:
        body = lines[begin + 1:end]
    else:
        body = [f"{indent}# Hint: {task.hint}",
                f'{indent}raise NotImplementedError("Task {task.id}: {task.title} ({task.function})")']
    return "\n".join(lines[:begin] + body + lines[end + 1:]) + "\n"


def _used_names(source: str) -> set:
    """The names ``source`` reads, as pyflakes sees them: a string annotation such as
    ``root: "Function"`` reads ``Function`` too, so the stub must import it."""
    names, trees = set(), [ast.parse(source)]
    while trees:
        for node in ast.walk(trees.pop()):
            if isinstance(node, ast.Name):
                names.add(node.id)
            for annotation in (getattr(node, "annotation", None), getattr(node, "returns", None)):
                if isinstance(annotation, ast.AST):
                    trees += [_expression(c.value) for c in ast.walk(annotation)
                              if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return names


def _expression(text: str) -> ast.AST:
    """``text`` parsed as an expression; nothing for a string that is not one (as in ``Literal["a b"]``)."""
    try:
        return ast.parse(text, mode="eval")
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def _import_of(name: str, value, module_name: str) -> tuple:
    """(module, name, alias) by which a chapter file imports what ``module_name`` calls ``name``."""
    if inspect.ismodule(value):
        package, _, leaf = value.__name__.rpartition(".")
        return package, leaf, name
    home = getattr(value, "__module__", None)
    if not (isinstance(home, str) and getattr(sys.modules.get(home), name, None) is value):
        home = module_name
    return home, name, name


def _check_public(task: Task, package: str, name: str) -> None:
    """Refuse an import of a ``_private`` name (or from a private module): stubs use public names only."""
    private = [part for part in package.split(".") + [name] if part.startswith("_")]
    if private:
        where = f"from {package} import {name}" if package else f"import {name}"
        raise ValueError(f"task {task.id} ({task.module}.{task.function}): its chapter file would need "
                         f"`{where}`, and {private[0]} is private: a helper that the stubs use too needs a public "
                         "name in its one home; rename it there, then regenerate")


def _imports(tasks, sources) -> list:
    """Import lines for every module-level name the tasks use that the file does not define."""
    defined = {task.function for task in tasks}
    found = set()
    for task, source in zip(tasks, sources):
        module = importlib.import_module(task.module)
        imports = {_import_of(name, vars(module)[name], task.module)
                   for name in _used_names(source) - defined if name in vars(module)}
        for package, name, _ in sorted(imports):
            _check_public(task, package, name)
        found |= imports
    spell = lambda name, alias: name if name == alias else f"{name} as {alias}"
    plain = sorted(((name not in sys.stdlib_module_names, name), alias) for package, name, alias in found
                   if not package)  # the standard library first
    lines = [f"import {spell(name, alias)}" for (_, name), alias in plain]
    for package in sorted({package for package, _, _ in found if package}):
        names = sorted(spell(name, alias) for p, name, alias in found if p == package)
        lines.append(f"from {package} import {', '.join(names)}")
    return lines


def chapter_source(chapter: int, solution: bool = False, tasks=TASKS) -> str:
    """The whole text of one chapter's exercise file (its tasks taken from ``tasks``)."""
    filename, title = CHAPTERS[chapter]
    tasks = [task for task in tasks if task.chapter == chapter]
    # The imports come from the full solutions, so a student has every tool the reference used.
    solutions = [task_source(task, True) for task in tasks]
    bodies = solutions if solution else [task_source(task, False) for task in tasks]
    ids = f"task {tasks[0].id}" if len(tasks) == 1 else f"tasks {tasks[0].id} to {tasks[-1].id}"
    header = (f'"""Chapter {chapter}, {title}: {ids}.\n\n'
              "Write the body of each function that raises NotImplementedError, then grade it with\n"
              f"``minigen grade --task {tasks[0].id}`` (see exercises/README.md).\n\n"
              "GENERATED by ``python -m minigen.course.exercises`` from the solution markers in minigen/;\n"
              'instructors regenerate this file instead of editing it.\n"""\n\n'
              "from __future__ import annotations\n")
    imports = _imports(tasks, solutions)
    parts = [header + "".join(line + "\n" for line in [""] * bool(imports) + imports)]
    for task, body in zip(tasks, bodies):
        points = f"{task.points} point" + ("s" if task.points > 1 else "")
        parts.append(f"\n# Task {task.id}: {task.title} ({points})\n{body}")
    return "\n".join(parts)


def task_list() -> str:
    """The task list of exercises/README.md (Markdown): how many tasks and points, and a table."""
    rows = [f"| {t.id} | `{CHAPTERS[t.chapter][0]}.py` | `{t.function}` | {t.title} | {t.points} |" for t in TASKS]
    return "\n".join([f"{len(TASKS)} tasks, {sum(t.points for t in TASKS)} points:",
                      "", "| task | file | function | what | points |",
                      "|------|------|----------|------|--------|", *rows])


def readme_source(text: str, path="README.md") -> str:
    """``text``, a README, with the task list between its LIST_BEGIN and LIST_END lines regenerated."""
    before, begin, rest = text.partition(LIST_BEGIN + "\n")
    _, end, after = rest.partition(LIST_END + "\n")
    if not begin or not end:
        raise ValueError(f"{path} has no generated task list: put the lines\n{LIST_BEGIN}\n{LIST_END}\n"
                         "where it belongs, then run python -m minigen.course.exercises")
    return f"{before}{LIST_BEGIN}\n\n{task_list()}\n\n{LIST_END}\n{after}"


def _expected(folder: Path, solution: bool) -> dict:
    """Path -> text of every generated file in ``folder``; the README only where it exists."""
    files = {folder / f"{filename}.py": chapter_source(chapter, solution)
             for chapter, (filename, _) in CHAPTERS.items()}
    if (folder / README).exists():
        files[folder / README] = readme_source((folder / README).read_text(), folder / README)
    return files


def generate(folder, solution: bool = False) -> list:
    """Write every chapter's file into ``folder``, and the task list of its README if it has one;
    returns the paths written. Nothing is written if any file cannot be generated."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = _expected(folder, solution)
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def differences(folder) -> list:
    """The generated files in ``folder`` (the chapter files, the README's task list) that are
    missing or differ from what the generator writes."""
    folder = Path(folder)
    return [str(path) for path, text in _expected(folder, False).items()
            if not path.exists() or path.read_text() != text]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigen.course.exercises",
                                     description="Generate the exercise stubs from the solution markers in minigen/, "
                                                 "and the task list of the folder's README from TASKS.")
    parser.add_argument("--out", default="exercises", help="the folder to write (default exercises)")
    parser.add_argument("--solutions", action="store_true", help="keep the solutions in (for instructors)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the stubs in --out (or its README's task list) "
                             "are missing or out of date")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = differences(args.out)
            for path in stale:
                print(f"out of date: {path} (run: python -m minigen.course.exercises --out {args.out})")
            return 1 if stale else 0
        for path in generate(args.out, args.solutions):
            print(f"wrote {path}")
    except ValueError as error:  # a task the generator cannot write: say which and why, no traceback
        print(f"python -m minigen.course.exercises: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
