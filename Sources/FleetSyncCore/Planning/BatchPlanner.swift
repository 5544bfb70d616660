import Foundation

/// A foreign-key cycle between synced tables that the priority registry does not break.
public struct PlanningError: Error, Sendable, Equatable, CustomStringConvertible {
    public var cycle: [String]
    public var description: String {
        "foreign keys form a cycle between synced tables: \(cycle.joined(separator: " -> ")); "
            + "give one of these tables a priority in the configuration ([[table]] priority = N) to fix their apply order"
    }
}

/// The order in which a node applies the tables of a batch: parents before children.
public struct ApplyPlan: Sendable, Equatable {
    /// Sync names of the tables, in apply order.
    public var tableOrder: [String]
    /// For each table, the columns of its foreign keys to itself (parent rows come first).
    public var selfReferences: [String: [String]]

    /// The rank of `table` in the order (unknown tables go last).
    public func rank(of table: String) -> Int { tableOrder.firstIndex(of: table) ?? tableOrder.count }
}

/// Plans batches from the foreign-key graph read at boot and the configured priorities.
///
/// A table's depth is 0 without foreign keys to other synced tables, else one more than its
/// deepest parent. A configured `priority` replaces the depth of its table and removes that
/// table's own foreign keys from the graph, which is how an operator breaks a cycle.
public enum BatchPlanner {
    public static func plan(tables: [TableConfiguration], physical: [String: PhysicalTable]) throws(PlanningError) -> ApplyPlan {
        var syncName: [String: String] = [:]  // "schema.table" -> sync name
        for table in tables { syncName["\(table.schema).\(physical[table.name]?.name ?? table.name)"] = table.name }
        var parents: [String: [String]] = [:]
        var selfReferences: [String: [String]] = [:]
        for table in tables {
            guard let found = physical[table.name] else { continue }
            for key in found.foreignKeys {
                guard let parent = syncName["\(key.referencedSchema).\(key.referencedTable)"] else { continue }
                if parent == table.name {
                    if key.columns.count == 1 { selfReferences[table.name, default: []].append(key.columns[0]) }
                } else if !parents[table.name, default: []].contains(parent) {
                    parents[table.name, default: []].append(parent)
                }
            }
        }
        let priority = Dictionary(uniqueKeysWithValues: tables.compactMap { t in t.priority.map { (t.name, $0) } })
        var depth: [String: Int] = [:]
        var visiting: [String] = []

        func resolve(_ name: String) throws(PlanningError) -> Int {
            if let known = depth[name] { return known }
            if let p = priority[name] { depth[name] = p; return p }
            if let index = visiting.firstIndex(of: name) {
                throw PlanningError(cycle: Array(visiting[index...]) + [name])
            }
            visiting.append(name)
            var value = 0
            for parent in parents[name, default: []].sorted() {
                value = max(value, try resolve(parent) + 1)
            }
            visiting.removeLast()
            depth[name] = value
            return value
        }
        for table in tables { _ = try resolve(table.name) }
        let order = tables.map(\.name).sorted { (depth[$0]!, $0) < (depth[$1]!, $1) }
        return ApplyPlan(tableOrder: order, selfReferences: selfReferences)
    }

    /// Orders rows of one table so that a row comes after the row it references through a
    /// self-referencing foreign key when both are in the batch; otherwise the given order (by
    /// sequence) is kept. Rows in a reference cycle keep their relative order at the end.
    /// - Parameter rows: each row's id and the ids it references (its parents).
    /// - Returns: indices into `rows` in apply order.
    public static func parentFirst(_ rows: [(id: UUID, parents: [UUID])]) -> [Int] {
        var indexOf: [UUID: Int] = [:]
        for (i, row) in rows.enumerated() { indexOf[row.id] = i }
        var waiting = [Int](repeating: 0, count: rows.count)
        var children: [Int: [Int]] = [:]
        for (i, row) in rows.enumerated() {
            for parent in row.parents {
                guard let p = indexOf[parent], p != i else { continue }
                waiting[i] += 1
                children[p, default: []].append(i)
            }
        }
        // Kahn's algorithm with a min-heap on the original index keeps sequence order among ready rows.
        var ready = Heap<Int>()
        for i in rows.indices where waiting[i] == 0 { ready.insert(i) }
        var order: [Int] = []
        order.reserveCapacity(rows.count)
        while let next = ready.popMin() {
            order.append(next)
            for child in children[next, default: []] {
                waiting[child] -= 1
                if waiting[child] == 0 { ready.insert(child) }
            }
        }
        if order.count < rows.count {
            let placed = Set(order)
            order += rows.indices.filter { !placed.contains($0) }
        }
        return order
    }
}

/// A minimal binary min-heap.
struct Heap<Element: Comparable> {
    private var items: [Element] = []

    mutating func insert(_ element: Element) {
        items.append(element)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popMin() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let min = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count && items[left] < items[smallest] { smallest = left }
            if right < items.count && items[right] < items[smallest] { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return min
    }
}
