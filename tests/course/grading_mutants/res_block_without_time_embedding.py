"""Task 6.6 mistake: the time embedding is never added: the block does not know the step."""
TASK = "6.6"


def res_block(block, x, embedding):
    h = block.conv1(block.norm1(x, silu=True))
    h = block.conv2(block.norm2(h, silu=True))
    return block.skip(x) + h
