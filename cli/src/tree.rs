//! Ordering processes as a tree by their parent pid.

use std::collections::HashMap;

/// What the tree needs to know of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    /// Start time, unix seconds (0 when unknown).
    pub(crate) start_time: i64,
}

/// Orders `nodes` depth first: each root, then its children (by pid), their
/// children, and so on. Returns `(index into nodes, depth)` for every node
/// exactly once.
///
/// A node's parent is the node whose pid is its ppid, unless that process
/// started after it: then the ppid names a later process that reused the
/// dead parent's pid, and the node is a root. Roots are the nodes without a
/// parent among `nodes`, in pid order. Nodes caught in a ppid cycle (which
/// only damaged data can hold) are shown as roots rather than lost. The walk
/// uses its own stack, so a deep chain cannot overflow the call stack.
pub(crate) fn tree_order(nodes: &[Node]) -> Vec<(usize, usize)> {
    let mut by_pid: HashMap<u32, usize> = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        by_pid.entry(node.pid).or_insert(i);
    }
    let parent_of = |i: usize| -> Option<usize> {
        let node = &nodes[i];
        let p = *by_pid.get(&node.ppid)?;
        let parent = &nodes[p];
        let reused =
            parent.start_time != 0 && node.start_time != 0 && parent.start_time > node.start_time;
        (p != i && !reused).then_some(p)
    };

    let mut order_by_pid: Vec<usize> = (0..nodes.len()).collect();
    order_by_pid.sort_by_key(|&i| (nodes[i].pid, i));
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut roots = Vec::new();
    for &i in &order_by_pid {
        match parent_of(i) {
            Some(p) => children[p].push(i),
            None => roots.push(i),
        }
    }

    let mut visited = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    let mut stack: Vec<(usize, usize)> = Vec::new();
    // Real roots first; then whatever a cycle kept out of reach, in pid order.
    for start in roots.into_iter().chain(order_by_pid) {
        if visited[start] {
            continue;
        }
        stack.push((start, 0));
        while let Some((i, depth)) = stack.pop() {
            if visited[i] {
                continue;
            }
            visited[i] = true;
            order.push((i, depth));
            for &child in children[i].iter().rev() {
                if !visited[child] {
                    stack.push((child, depth + 1));
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pid: u32, ppid: u32) -> Node {
        Node {
            pid,
            ppid,
            start_time: 100,
        }
    }

    fn pids(nodes: &[Node], order: &[(usize, usize)]) -> Vec<(u32, usize)> {
        order.iter().map(|&(i, d)| (nodes[i].pid, d)).collect()
    }

    #[test]
    fn children_follow_their_parent_in_pid_order() {
        let nodes = [
            node(30, 1),
            node(1, 0),
            node(2, 0),
            node(10, 1),
            node(11, 10),
            node(3, 2),
        ];
        let order = tree_order(&nodes);
        assert_eq!(
            pids(&nodes, &order),
            [(1, 0), (10, 1), (11, 2), (30, 1), (2, 0), (3, 1)]
        );
    }

    #[test]
    fn a_process_whose_parent_is_not_shown_is_a_root() {
        let nodes = [node(50, 40), node(51, 50), node(7, 1)];
        assert_eq!(
            pids(&nodes, &tree_order(&nodes)),
            [(7, 0), (50, 0), (51, 1)]
        );
    }

    #[test]
    fn a_reused_parent_pid_does_not_adopt_older_processes() {
        // 20's parent died and pid 10 went to a process started later.
        let nodes = [
            Node {
                pid: 10,
                ppid: 1,
                start_time: 500,
            },
            Node {
                pid: 20,
                ppid: 10,
                start_time: 200,
            },
        ];
        assert_eq!(pids(&nodes, &tree_order(&nodes)), [(10, 0), (20, 0)]);
    }

    #[test]
    fn cycles_and_self_parents_are_shown_once() {
        let nodes = [node(5, 6), node(6, 5), node(9, 9), node(7, 6)];
        let order = tree_order(&nodes);
        assert_eq!(order.len(), nodes.len());
        assert_eq!(pids(&nodes, &order), [(9, 0), (5, 0), (6, 1), (7, 2)]);
    }

    #[test]
    fn deep_chains_do_not_recurse() {
        let nodes: Vec<Node> = (1..=100_000).map(|pid| node(pid, pid - 1)).collect();
        let order = tree_order(&nodes);
        assert_eq!(order.len(), nodes.len());
        assert_eq!(order.last().map(|&(_, d)| d), Some(99_999));
    }
}
