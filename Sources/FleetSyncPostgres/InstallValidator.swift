import FleetSyncCore

/// Checks a configuration against the catalog before anything is installed.
struct InstallValidator {
    var configuration: FleetSyncConfiguration
    var physical: [String: PhysicalTable]

    func problems() -> [ConfigurationError] {
        var problems: [ConfigurationError] = []
        for (index, table) in configuration.tables.enumerated() {
            let path = "table[\(index)]"
            guard let found = physical[table.name] else {
                problems.append(.init(
                    key: "\(path).name", problem: "table \(table.schema).\(table.name) does not exist in the database",
                    fix: "create the table first, or correct name/schema"))
                continue
            }
            problems += primaryKeyProblems(found, path: path)
            problems += trackingTypeProblems(found, path: path)
            for column in table.owners.keys.sorted() where found.column(column) == nil {
                problems.append(.init(
                    key: "\(path).owners", problem: "column \"\(column)\" does not exist in \(table.schema).\(table.name)",
                    fix: "remove it from the owners or add the column to the table"))
            }
            switch table.route {
            case .column(let column):
                if found.column(column) == nil {
                    problems.append(.init(
                        key: "\(path).route", problem: "routing column \"\(column)\" does not exist in \(table.schema).\(table.name)",
                        fix: "name a column that holds the vessel's node id"))
                }
            case .parent(let parent, let via):
                if found.column(via) == nil {
                    problems.append(.init(
                        key: "\(path).route", problem: "column \"\(via)\" does not exist in \(table.schema).\(table.name)",
                        fix: "name the column that references \(parent).id"))
                } else if let parentTable = physical[parent],
                          !found.foreignKeys.contains(where: {
                              $0.columns == [via] && $0.referencedTable == parentTable.name
                                  && $0.referencedSchema == parentTable.schema && $0.referencedColumns == ["id"]
                          }) {
                    problems.append(.init(
                        key: "\(path).route", problem: "column \"\(via)\" has no foreign key to \(parent).id",
                        fix: "add FOREIGN KEY (\(via)) REFERENCES \(parent)(id), or route differently"))
                }
            case .broadcast:
                break
            }
        }
        return problems
    }

    private func primaryKeyProblems(_ table: PhysicalTable, path: String) -> [ConfigurationError] {
        let id = table.column("id")
        if table.primaryKey.isEmpty && id == nil { return [] }  // init adds id uuid PRIMARY KEY
        if table.primaryKey == ["id"], id?.type == "uuid" { return [] }
        let current = table.primaryKey.isEmpty
            ? "no primary key, but a column \"id\" of type \(id?.type ?? "?")"
            : "primary key (\(table.primaryKey.joined(separator: ", ")))" + (id.map { " and an id of type \($0.type)" } ?? "")
        return [.init(
            key: "\(path).name",
            problem: "table \(table.schema).\(table.name) has \(current); FleetSync needs a uuid primary key named id",
            fix: "make id a uuid primary key (e.g. ALTER TABLE ... ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid(), then move the primary key to it and keep the old key UNIQUE), or drop the old key so that init adds id itself")]
    }

    private func trackingTypeProblems(_ table: PhysicalTable, path: String) -> [ConfigurationError] {
        let expected = ["sync_version": "bigint", "is_deleted": "boolean", "sync_clock": "jsonb"]
        return expected.keys.sorted().compactMap { name in
            guard let column = table.column(name), column.type != expected[name] else { return nil }
            return .init(
                key: "\(path).name", problem: "\(table.schema).\(table.name).\(name) is \(column.type), but FleetSync needs it to be \(expected[name]!)",
                fix: "rename or drop that column; init adds its own")
        }
    }

    /// The statements that add the tracking columns `table` lacks.
    static func trackingColumnStatements(for table: PhysicalTable) -> [(column: String, sql: String)] {
        let qualified = SQL.qualified(table.schema, table.name)
        var statements: [(String, String)] = []
        if let id = table.column("id") {
            if !id.hasDefault {
                statements.append(("id default", "ALTER TABLE \(qualified) ALTER COLUMN id SET DEFAULT fleetsync.uuidv7()"))
            }
        } else {
            statements.append(("id", "ALTER TABLE \(qualified) ADD COLUMN id uuid NOT NULL DEFAULT fleetsync.uuidv7() PRIMARY KEY"))
        }
        if table.column("sync_version") == nil {
            statements.append(("sync_version", "ALTER TABLE \(qualified) ADD COLUMN sync_version bigint NOT NULL DEFAULT 0"))
        }
        if table.column("is_deleted") == nil {
            statements.append(("is_deleted", "ALTER TABLE \(qualified) ADD COLUMN is_deleted boolean NOT NULL DEFAULT false"))
        }
        if table.column("sync_clock") == nil {
            statements.append(("sync_clock", "ALTER TABLE \(qualified) ADD COLUMN sync_clock jsonb NOT NULL DEFAULT '{}'"))
        }
        return statements
    }
}
