import ArgumentParser
import FleetSyncCore
import FleetSyncPostgres
import PostgresNIO

/// What `init` does on a vessel whose synced tables already hold rows.
enum ExistingRowsPolicy: String, ExpressibleByArgument, CaseIterable {
    /// Refuse, naming the tables and the fix (the default).
    case refuse
    /// Keep them: they carry no clocks, so every row the shore also holds takes the shore's
    /// version at the first catch-up; rows only this vessel holds stay local, are never sent, and
    /// `fleetsync verify` lists them (`--repair` removes them).
    case merge
}

enum ExistingRows {
    /// On a vessel's first init (no fleetsync schema yet), refuses when synced tables hold rows,
    /// unless `policy` is merge.
    static func check(_ configuration: FleetSyncConfiguration, policy: ExistingRowsPolicy, on db: DatabaseSession) async throws {
        guard configuration.role == .vessel else { return }
        let installed: Bool = try await db.rows("SELECT to_regclass('fleetsync.node') IS NOT NULL", context: "looking for an earlier install")[0].value(0)
        guard !installed else { return }
        var held: [String] = []
        for table in configuration.tables {
            let qualified = SQL.qualified(table.schema, table.name)
            var binds = PostgresBindings()
            binds.append(qualified)
            let exists: Bool = try await db.rows("SELECT to_regclass($1) IS NOT NULL", binds, context: "looking for table \(table.name)")[0].value(0)
            guard exists else { continue }
            let count: Int64 = try await db.rows("SELECT count(*) FROM \(qualified)", context: "counting rows of \(table.name)")[0].value(0)
            if count > 0 { held.append("\(table.name) (\(count) row(s))") }
        }
        guard !held.isEmpty else { return }
        switch policy {
        case .merge:
            print("vessel tables already hold rows: \(held.joined(separator: ", ")); merging: the shore's version of each row it also holds wins at the first sync, rows only this vessel holds stay local (fleetsync verify lists them)")
        case .refuse:
            throw CommandFailure(description: """
                init refused: this vessel's synced tables already hold rows: \(held.joined(separator: ", ")). \
                A vessel receives its partition from the shore at its first sync; rows already here carry no clocks and would not be sent. \
                Empty the tables, or run init again with --existing-rows merge to keep them (the shore's version wins where it holds the row; \
                fleetsync verify lists rows only this vessel holds)
                """)
        }
    }
}
