import TOMLKit

extension ConfigurationReader {
    /// Reads every `[[table]]` entry, then checks the rules that span tables.
    mutating func readTables(_ root: TOMLTable) -> [TableConfiguration] {
        guard let value = root["table"] else {
            fail("table", "no synced table is configured", "add one [[table]] entry per synced table")
            return []
        }
        guard let array = value.array else {
            fail("table", "must be an array of tables", "write each synced table as a [[table]] entry")
            return []
        }
        var tables: [TableConfiguration] = []
        for index in 0..<array.count {
            let path = "table[\(index)]"
            guard let entry = array[index].table else {
                fail(path, "must be a table", "write it as a [[table]] entry")
                continue
            }
            if let table = readTable(entry, path: path) { tables.append(table) }
        }
        checkAcrossTables(tables)
        return tables
    }

    private mutating func identifier(_ entry: TOMLTable, _ key: String, path: String, required: Bool) -> String? {
        guard let name = string(entry, key, path: path, required: required) else { return nil }
        guard Identifiers.isValidSQLName(name) else {
            fail("\(path).\(key)", "\"\(name.prefix(80))\" is not a usable PostgreSQL name", "use 1 to 63 bytes without control characters")
            return nil
        }
        return name
    }

    private mutating func readTable(_ entry: TOMLTable, path: String) -> TableConfiguration? {
        checkKeys(entry, path: path, known: ["name", "schema", "route", "owners", "default_owner", "on_delete", "delete_by", "tombstone", "priority"])
        let name = identifier(entry, "name", path: path, required: true)
        let schema = identifier(entry, "schema", path: path, required: false) ?? "public"
        let route = readRoute(entry, path: path)
        let defaultOwner = enumeration(entry, "default_owner", path: path, as: FieldOwner.self) ?? .shore
        let onDelete = enumeration(entry, "on_delete", path: path, as: DeletePolicy.self) ?? .tombstone
        let deleteBy = enumeration(entry, "delete_by", path: path, as: DeletePermission.self) ?? .owner
        if entry["delete_by"] != nil && onDelete == .refuse {
            fail("\(path).delete_by", "says who may delete rows, but on_delete = \"refuse\" refuses every delete",
                 "remove delete_by, or set on_delete = \"tombstone\" to let those nodes delete")
        }
        let tombstone = enumeration(entry, "tombstone", path: path, as: TombstoneRule.self) ?? .wins
        let priority = integer(entry, "priority", path: path, range: -1000...1000)
        let owners = readOwners(entry, path: path)
        guard let name, let route else { return nil }
        return TableConfiguration(
            name: name, schema: schema, route: route, owners: owners, defaultOwner: defaultOwner,
            onDelete: onDelete, deleteBy: deleteBy, tombstone: tombstone, priority: priority)
    }

    private mutating func readRoute(_ entry: TOMLTable, path: String) -> RoutingRule? {
        let key = "\(path).route"
        let fix = "use route = \"broadcast\", route = { column = \"vessel_id\" } or route = { parent = \"TABLE\", via = \"COLUMN\" }"
        guard let value = entry["route"] else {
            fail(key, "is missing", fix)
            return nil
        }
        if let word = value.string {
            if word == "broadcast" { return .broadcast }
            fail(key, "\"\(word.prefix(64))\" is not a known routing rule", fix)
            return nil
        }
        guard let rule = value.table else {
            fail(key, "must be a string or an inline table", fix)
            return nil
        }
        checkKeys(rule, path: key, known: ["column", "parent", "via"])
        if rule["column"] != nil {
            if rule["parent"] != nil || rule["via"] != nil {
                fail(key, "names both a column and a parent", "choose one routing rule")
                return nil
            }
            return identifier(rule, "column", path: key, required: true).map(RoutingRule.column)
        }
        if rule["parent"] != nil || rule["via"] != nil {
            let parent = identifier(rule, "parent", path: key, required: true)
            let via = identifier(rule, "via", path: key, required: true)
            guard let parent, let via else { return nil }
            return .parent(table: parent, via: via)
        }
        fail(key, "is an empty routing rule", fix)
        return nil
    }

    private mutating func readOwners(_ entry: TOMLTable, path: String) -> [String: FieldOwner] {
        guard let value = entry["owners"] else { return [:] }
        let key = "\(path).owners"
        guard let table = value.table else {
            fail(key, "must be a table", "write [table.owners] with shore = [...], vessel = [...], shared = [...]")
            return [:]
        }
        checkKeys(table, path: key, known: FieldOwner.allCases.map(\.rawValue))
        var owners: [String: FieldOwner] = [:]
        for owner in FieldOwner.allCases {
            guard let listValue = table[owner.rawValue] else { continue }
            guard let list = listValue.array else {
                fail("\(key).\(owner.rawValue)", "must be an array of column names", "write \(owner.rawValue) = [\"column\", ...]")
                continue
            }
            for i in 0..<list.count {
                guard let column = list[i].string, Identifiers.isValidSQLName(column) else {
                    fail("\(key).\(owner.rawValue)[\(i)]", "is not a column name", "list column names as strings")
                    continue
                }
                if FleetSyncConfiguration.trackingColumns.contains(column) {
                    fail("\(key).\(owner.rawValue)", "lists \"\(column)\", a tracking column FleetSync manages", "remove \"\(column)\" from the owners")
                    continue
                }
                if let previous = owners[column], previous != owner {
                    fail("\(key)", "column \"\(column)\" is given two owners (\(previous.rawValue) and \(owner.rawValue))", "list \"\(column)\" under one owner only")
                    continue
                }
                owners[column] = owner
            }
        }
        return owners
    }

    private mutating func checkAcrossTables(_ tables: [TableConfiguration]) {
        var seen: Set<String> = []
        for (index, table) in tables.enumerated() {
            let path = "table[\(index)]"
            if !seen.insert(table.name).inserted {
                fail("\(path).name", "table \"\(table.name)\" is configured twice", "keep one [[table]] entry per table")
            }
            // The column that decides which vessel receives a row is the shore's: written by a
            // vessel, it would move rows into another vessel's partition.
            let routing: (column: String, role: String)? = switch table.route {
            case .column(let column): (column, "routing column")
            case .parent(_, let via): (via, "column naming the parent")
            case .broadcast: nil
            }
            if let (column, role) = routing, table.owner(of: column) != .shore {
                fail("\(path).owners", "the \(role) \"\(column)\" of table \"\(table.name)\" is owned by \(table.owner(of: column).rawValue), but only the shore may decide which vessel receives a row",
                     table.owners[column] == nil ? "list \"\(column)\" under shore = [...] in [table.owners]" : "move \"\(column)\" to shore = [...] in [table.owners]")
            }
            switch table.route {
            case .parent(let parent, _):
                if parent == table.name {
                    fail("\(path).route", "a table cannot be routed through itself", "route it by a column or as broadcast")
                } else if !tables.contains(where: { $0.name == parent }) {
                    fail("\(path).route", "parent table \"\(parent)\" is not a synced table", "add a [[table]] entry for \"\(parent)\" or route differently")
                }
            case .broadcast:
                let vesselOwned = table.owners.filter { $0.value == .vessel }.map(\.key).sorted()
                if table.defaultOwner == .vessel || !vesselOwned.isEmpty {
                    let what = vesselOwned.isEmpty ? "default_owner" : "columns \(vesselOwned.joined(separator: ", "))"
                    fail("\(path).owners", "broadcast table \"\(table.name)\" has vessel-owned \(what), but no single vessel owns a broadcast row", "make them shore or shared")
                }
            case .column:
                break
            }
        }
        // A parent chain must end in a column or broadcast rule, not loop.
        for (index, table) in tables.enumerated() {
            var visited: [String] = [table.name]
            var current = table
            while case .parent(let parent, _) = current.route, let next = tables.first(where: { $0.name == parent }) {
                if visited.contains(next.name) {
                    fail("table[\(index)].route", "routing through parents loops: \((visited + [next.name]).joined(separator: " -> "))", "route one of these tables by a column")
                    break
                }
                visited.append(next.name)
                current = next
            }
        }
    }
}
