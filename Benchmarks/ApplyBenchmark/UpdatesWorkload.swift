// WORKLOAD=updates: what the receiving side pays per event for batches of single-column UPDATEs of
// a 12-column table (the end-to-end stream of issue 19), reading only the columns an update
// touches against the former read of every column, alternately in one run on one cluster.
import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation

@discardableResult
func updatesWorkload(rows: Int, batches: Int, rounds: Int, print: Bool = true) async throws -> Double {
    if print { Swift.print("command: WORKLOAD=updates ROWS=\(rows) BATCHES=\(batches) ROUNDS=\(rounds) swift run -c release fleetsync-apply-benchmark") }
    let cluster = try TestCluster.start()
    defer { cluster.stop() }
    let url = try await cluster.createDatabase(prefix: "updates")
    try Fixtures.runScript("""
        CREATE TABLE bench_item (
          id uuid PRIMARY KEY DEFAULT gen_random_uuid(), k integer NOT NULL UNIQUE, code text NOT NULL, title text,
          quantity integer NOT NULL, hits bigint NOT NULL DEFAULT 0, unit_price numeric(12,2), weight_kg double precision,
          active boolean NOT NULL, due_on date, created_at timestamptz NOT NULL, updated_at timestamptz);
        INSERT INTO bench_item (k, code, title, quantity, hits, unit_price, weight_kg, active, due_on, created_at, updated_at)
        SELECT i, 'ITEM-' || lpad(i::text, 6, '0'), 'Spare part number ' || i || ' for the main engine',
               i % 500, 0, (i % 10000) / 100.0, (i % 977) * 0.25, i % 3 <> 0,
               date '2025-01-01' + (i % 365), timestamptz '2024-01-01 00:00+00' + i * interval '1 minute', NULL
        FROM generate_series(1, \(rows)) AS i;
        """, url: url)
    let configuration = Fixtures.configuration(role: .vessel, nodeID: "bench", url: url,
                                               tables: [TableConfiguration(name: "bench_item", route: .broadcast, defaultOwner: .shared)])
    let db = try await DatabaseSession.connect(url: url, logger: Fixtures.logger)
    defer { Task { await db.close() } }
    _ = try await Installer(configuration: configuration).install(on: db)
    try await db.execute("VACUUM ANALYZE bench_item")
    let ids: [UUID] = try await db.rows("SELECT id FROM bench_item ORDER BY k", context: "reading ids").map { try $0.decode(UUID.self) }
    let schema = try await LocalSchema.load(configuration: configuration, session: db)
    let telemetry = TelemetryWriter(url: url, logger: Fixtures.logger)
    var counter: Int64 = 1_000
    var rng = SystemRandomNumberGenerator()
    func batch() -> [ChangeEvent] {
        (0..<1_000).map { _ in
            counter += 1
            let clock = FieldClock(counter: counter, node: "shore")
            let field: (String, JSONValue) = Bool.random(using: &rng) ? ("hits", .number(String(counter))) : ("title", .string("title \(counter)"))
            return ChangeEvent(table: "bench_item", rowID: ids.randomElement(using: &rng)!, fields: [field.0: FieldChange(value: field.1, clock: clock)], origin: "shore")
        }
    }
    // Three receivers in turn: today's (touched columns read, FleetSync's random_page_cost 1.1),
    // the former read of every column, and today's with PostgreSQL's default random_page_cost 4.
    var times: [Bool: [Double]] = [false: [], true: []]
    var defaultCost: [Double] = []
    for round in 1...rounds {
        for (every, serverDefault) in [(false, false), (true, false), (false, true)] {
            try await db.execute(serverDefault ? "SET random_page_cost = 4" : "RESET random_page_cost")
            var applier = Applier(schema: schema, session: db, telemetry: telemetry)
            applier.readsEveryColumn = every
            let start = ContinuousClock.now
            for _ in 0..<batches {
                let report = try await applier.apply(batch(), from: "shore")
                precondition(report.deadLettered == 0, "an update failed")
            }
            let elapsed = ContinuousClock.now - start
            let ms = (Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15) / Double(batches)
            if serverDefault { defaultCost.append(ms) } else { times[every]!.append(ms) }
            if print { Swift.print(String(format: "round %d: %@: %.1f ms per 1,000-event batch", round, serverDefault ? "touched columns read, random_page_cost 4" : every ? "every column read" : "touched columns read", ms)) }
        }
    }
    let narrow = times[false]!.sorted()[rounds / 2], wide = times[true]!.sorted()[rounds / 2]
    if print { Swift.print(String(format: "receiver, single-column updates of a 12-column table (%d rows): touched columns %.1f ms, every column %.1f ms per 1,000 events (medians): %.2fx faster", rows, narrow, wide, wide / narrow)) }
    let slow = defaultCost.sorted()[rounds / 2]
    if print { Swift.print(String(format: "the same with PostgreSQL's default random_page_cost 4 instead of FleetSync's 1.1: %.1f ms per 1,000 events (median): 1.1 is %.2fx faster", slow, slow / narrow)) }
    await telemetry.close()
    return narrow
}

/// The receiver's median time for a batch of 1,000 single-column updates, as applied today.
func updatesApplyMilliseconds(rows: Int, batches: Int, rounds: Int) async throws -> Double {
    try await updatesWorkload(rows: rows, batches: batches, rounds: rounds, print: false)
}
