"""Task 6.7 mistake: the guidance starts from the conditional output: eps_c + w (eps_c - eps_u)."""
TASK = "6.7"


def guided_prediction(conditional, unconditional, guidance):
    return conditional + guidance * (conditional - unconditional)
