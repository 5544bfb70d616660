import ArgumentParser
import FleetSyncCore
import FleetSyncPostgres

struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Install or upgrade the fleetsync schema and capture triggers (idempotent, one transaction).")

    @OptionGroup var options: ConfigOption
    @Option(name: .customLong("existing-rows"), help: "(vessel) When synced tables already hold rows at the first init: refuse (default) or merge.")
    var existingRows: ExistingRowsPolicy = .refuse

    func run() async throws {
        let configuration = try options.load()
        try await withDatabase(configuration) { [existingRows] db in try await ExistingRows.check(configuration, policy: existingRows, on: db) }
        var installer = Installer(configuration: configuration)
        installer.progress = { print($0) }
        let report = try await withDatabase(configuration) { [installer] db in
            try await installer.install(on: db)
        }
        if report.fromVersion == report.toVersion {
            print("fleetsync schema is at version \(report.toVersion); nothing to migrate")
        } else {
            print("fleetsync schema migrated from version \(report.fromVersion) to \(report.toVersion)")
        }
        for column in report.addedColumns { print("added tracking column \(column)") }
        for (table, rows) in report.clockedRows.sorted(by: { $0.key < $1.key }) {
            print("\(table): \(rows) row(s) that existed before init now carry the shore's clocks")
        }
        if report.rowsMovedByRouting > 0 {
            print("the routing rules changed: \(report.rowsMovedByRouting) row(s) move between vessels (offboardings and baselines queued, as for transfers)")
        }
        print("capture installed on \(report.capturedTables.count) table(s): \(report.capturedTables.joined(separator: ", "))")
        for table in report.removedTables { print("capture removed from \(table) (no longer configured)") }
        for route in report.unindexedRoutes {
            print("warning: routing column \(route) has no index: each vessel's catch-up and every transfer read the whole table. Fix: \(route.fix);")
        }
        print("node \(configuration.nodeID) (\(configuration.role.rawValue)) is ready")
    }
}

struct UninstallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uninstall",
        abstract: "Remove the capture triggers and the fleetsync schema; business tables and rows stay.")

    @OptionGroup var options: ConfigOption

    @Flag(help: "Confirm removal of all sync state, including events not yet sent.")
    var yes = false

    /// Checked before running, so that the error comes with this command's own usage.
    func validate() throws {
        guard yes else {
            throw ValidationError("uninstall drops the fleetsync schema with every event not yet sent; run again with --yes to confirm")
        }
    }

    func run() async throws {
        let configuration = try options.load()
        try await withDatabase(configuration) { db in
            try await Installer(configuration: configuration).uninstall(on: db)
        }
        print("fleetsync removed; business tables and their rows are unchanged")
    }
}
