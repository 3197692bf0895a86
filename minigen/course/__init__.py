"""The course around the library: exercise stubs generated from the solution
markers in minigen's own code (``exercises``), the grader and its pytest plugin
(``grading``, ``grading_plugin``), the book's chapter tools (``book``) and the
chain rule on 2x2 images that chapter 1 and its tasks use (``chain_rule``)."""
