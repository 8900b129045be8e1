"""The project's one error base: every expected failure (bad input, bad config, a run that cannot start) is a
`Fold0123Error` whose message is one line naming the file, key or row; the CLIs print those and let anything
else (a bug) raise with its traceback."""


class Fold0123Error(ValueError):
    pass
