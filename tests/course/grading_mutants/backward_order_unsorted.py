"""Task 2.4 mistake: the functions in the order a depth-first search finds them, not sorted by generation."""
TASK = "2.4"


def backward_order(root):
    order, seen, todo = [], {id(root)}, [root]
    while todo:
        fn = todo.pop()
        order.append(fn)
        for x in fn.inputs or ():
            if x.requires_grad and x.creator is not None and id(x.creator) not in seen:
                seen.add(id(x.creator))
                todo.append(x.creator)
    return order
