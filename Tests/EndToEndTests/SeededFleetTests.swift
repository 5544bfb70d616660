import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
import FleetSyncVessel
import Foundation
import PostgresNIO
import XCTest

/// Issue 15's seeded end-to-end test: a shore and two vessels on real clusters behind a real
/// `fleetsync serve`, batches of 7 events, and per seed a few rounds of random writes on every
/// node (trips moved between vessels with their trees of steps, chains of steps inserted
/// children first on the shore and on vessels, numbers over 1,000 digits, jsonb nested 1,000
/// deep, now and then a 5 MiB value), each round followed by syncs in a random order. After every
/// seed: each vessel holds exactly its partition (the same values and clocks as the shore), the
/// owner's last write of every owned field stands, and nothing is dead-lettered, waiting or
/// pending. `FLEETSYNC_SEEDS` (default 20) and `FLEETSYNC_FIRST_SEED` choose the seeds;
/// `scripts/seeded-fleet.sh` runs more.
final class SeededFleetTests: DatabaseTestCase {
    static let schema = """
        CREATE TABLE port (id uuid PRIMARY KEY, name text NOT NULL, info jsonb);
        CREATE TABLE trip (id uuid PRIMARY KEY, vessel_code text, name text, cargo numeric, doc jsonb, note text);
        CREATE TABLE step (
          id uuid PRIMARY KEY,
          trip_id uuid NOT NULL REFERENCES trip (id),
          parent_id uuid REFERENCES step (id),
          label text,
          crew_note text
        );
        """
    static let tables = """
        [[table]]
        name = "port"
        route = "broadcast"
        default_owner = "shore"

        [[table]]
        name = "trip"
        route = { column = "vessel_code" }
        default_owner = "shore"
        [table.owners]
        vessel = ["note"]
        shared = ["doc"]

        [[table]]
        name = "step"
        route = { parent = "trip", via = "trip_id" }
        default_owner = "shore"
        [table.owners]
        vessel = ["crew_note"]
        shared = ["label"]

        """

    var transports: [HTTPExchangeTransport] = []

    override func tearDown() async throws {
        for transport in transports { await transport.shutdown() }
        transports.removeAll()
        try await super.tearDown()
    }

    /// What each owned field must hold at the end: the owner's last write.
    struct Expected {
        var tripName: [UUID: String] = [:]
        var tripCargo: [UUID: String] = [:]
        var tripNote: [UUID: String] = [:]
        var stepCrewNote: [UUID: String] = [:]
        var portInfo: [UUID: String] = [:]
    }

    func testRandomFleetWorkloadsConvergeWithSmallBatches() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seeds = Int(environment["FLEETSYNC_SEEDS"] ?? "") ?? 20
        let first = UInt64(environment["FLEETSYNC_FIRST_SEED"] ?? "") ?? 1
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], limits: "[limits]\nbatch_events = 7\nbatch_bytes = 65536",
                                         schema: Self.schema, tables: Self.tables)
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        var vessels: [String: DatabaseSession] = [:]
        var syncs: [String: VesselSync] = [:]
        for node in fleet.vessels {
            let db = try await connect(node.url)
            vessels[node.id] = db
            let transport = try HTTPExchangeTransport(shoreURL: "http://127.0.0.1:\(fleet.httpPort)")
            transports.append(transport)
            let schema = try await LocalSchema.load(configuration: node.configuration, session: db)
            syncs[node.id] = VesselSync(configuration: node.configuration, schema: schema, session: db, telemetry: telemetry(node.url),
                                        transport: transport, logger: Fixtures.logger)
        }
        var expected = Expected()
        // The shore's view of which vessel holds each trip, and each trip's steps.
        var tripVessel: [UUID: String] = [:]
        var steps: [UUID: [UUID]] = [:]
        let names = fleet.vessels.map(\.id)
        for seed in first..<(first + UInt64(seeds)) {
            var rng = SplitMix64(seed: seed)
            for round in 0..<3 {
                // Each vessel writes to the trips it held after the last syncs: the shore may move
                // one of them away in the same round, before the vessel hears of it.
                let held = tripVessel
                try await shoreWrites(shore, &rng, seed: seed, round: round, names: names, tripVessel: &tripVessel, steps: &steps, expected: &expected)
                for name in names {
                    let owned = held.filter { $0.value == name }.keys.sorted { $0.uuidString < $1.uuidString }
                    try await vesselWrites(vessels[name]!, &rng, seed: seed, round: round, owned: owned, steps: &steps, expected: &expected)
                }
                // Everything propagates: every vessel syncs, in a random order, twice.
                for name in names.shuffled(using: &rng) + names.shuffled(using: &rng) {
                    _ = try await syncs[name]!.syncUntilIdle()
                }
            }
            try await check(seed: seed, shore: shore, vessels: vessels, expected: expected)
        }
    }

    /// A chain of steps under `trip`, inserted in one statement, children first when `childFirst`.
    func insertChain(_ db: DatabaseSession, trip: UUID, count: Int, childFirst: Bool, tag: String) async throws -> [UUID] {
        let ids = (0..<count).map { _ in UUID() }
        let values = ids.enumerated().map { i, id in
            "('\(id.lowercasedText)'::uuid, \(i == 0 ? "NULL" : "'\(ids[i - 1].lowercasedText)'")::uuid, \(i))"
        }.joined(separator: ", ")
        try await db.execute("""
            INSERT INTO step (id, trip_id, parent_id, label)
            SELECT v.id, '\(trip.lowercasedText)', v.parent, '\(tag)-' || v.n FROM (VALUES \(values)) AS v(id, parent, n)
            ORDER BY v.n \(childFirst ? "DESC" : "ASC")
            """)
        return ids
    }

    static func deepJSON(_ depth: Int, leaf: String) -> String {
        String(repeating: "{\"n\":", count: depth) + "\"\(leaf)\"" + String(repeating: "}", count: depth)
    }

    func shoreWrites(_ db: DatabaseSession, _ rng: inout SplitMix64, seed: UInt64, round: Int, names: [String],
                     tripVessel: inout [UUID: String], steps: inout [UUID: [UUID]], expected: inout Expected) async throws {
        let tag = "s\(seed)r\(round)"
        // New trips with trees of steps, some larger than several batches, some children first.
        for t in 0..<Int.random(in: 1...2, using: &rng) {
            let trip = UUID()
            let vessel = names.randomElement(using: &rng)!
            let name = "trip \(tag).\(t)"
            try await db.execute("INSERT INTO trip (id, vessel_code, name, cargo) VALUES ('\(trip.lowercasedText)', '\(vessel)', '\(name)', 1)")
            tripVessel[trip] = vessel
            expected.tripName[trip] = name
            expected.tripCargo[trip] = "1"
            steps[trip] = try await insertChain(db, trip: trip, count: Int.random(in: 1...25, using: &rng), childFirst: Bool.random(using: &rng), tag: tag)
        }
        let trips = tripVessel.keys.sorted { $0.uuidString < $1.uuidString }
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let trip = trips.randomElement(using: &rng)!
            switch Int.random(in: 0..<5, using: &rng) {
            case 0:
                // A transfer: the trip and its whole tree move.
                let target = names.randomElement(using: &rng)!
                try await db.execute("UPDATE trip SET vessel_code = '\(target)' WHERE id = '\(trip.lowercasedText)'")
                tripVessel[trip] = target
            case 1:
                // A number longer than 1,024 digits.
                let cargo = "1" + String(repeating: "0", count: Int.random(in: 1_000...1_200, using: &rng)) + ".\(Int.random(in: 1...9, using: &rng))"
                try await db.execute("UPDATE trip SET cargo = '\(cargo)' WHERE id = '\(trip.lowercasedText)'")
                expected.tripCargo[trip] = cargo
            case 2:
                // A shared jsonb nested far deeper than 64 levels, with a long number inside.
                let doc = Self.deepJSON(Int.random(in: 100...1_000, using: &rng), leaf: "shore \(tag)")
                try await db.execute("UPDATE trip SET doc = '\(doc)'::jsonb || jsonb_build_object('n2', ('1' || repeat('0', 1100))::numeric) WHERE id = '\(trip.lowercasedText)'")
            case 3:
                let name = "renamed \(tag).\(Int.random(in: 0..<1000, using: &rng))"
                try await db.execute("UPDATE trip SET name = '\(name)' WHERE id = '\(trip.lowercasedText)'")
                expected.tripName[trip] = name
            default:
                let port = UUID()
                let info = "{\"code\": \"\(tag)\"}"
                try await db.execute("INSERT INTO port (id, name, info) VALUES ('\(port.lowercasedText)', 'port \(tag)', '\(info)')")
                expected.portInfo[port] = info
            }
        }
    }

    func vesselWrites(_ db: DatabaseSession, _ rng: inout SplitMix64, seed: UInt64, round: Int, owned: [UUID],
                      steps: inout [UUID: [UUID]], expected: inout Expected) async throws {
        guard !owned.isEmpty else { return }
        let tag = "v\(seed)r\(round)"
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let trip = owned.randomElement(using: &rng)!
            switch Int.random(in: 0..<5, using: &rng) {
            case 0:
                var note = "note \(tag).\(Int.random(in: 0..<1000, using: &rng))"
                if Int.random(in: 0..<40, using: &rng) == 0 {
                    // Now and then a value of 5 MiB, five times the shore's former body limit.
                    note = String(repeating: "\(tag)-", count: 5 * 1_048_576 / (tag.count + 1))
                }
                try await db.execute("UPDATE trip SET note = '\(note)' WHERE id = '\(trip.lowercasedText)'")
                expected.tripNote[trip] = note
            case 1:
                // The vessel's own chain of steps, children first, larger than a batch.
                let ids = try await insertChain(db, trip: trip, count: Int.random(in: 8...20, using: &rng), childFirst: true, tag: tag)
                steps[trip, default: []] += ids
            case 2:
                guard let step = steps[trip]?.randomElement(using: &rng) else { continue }
                let note = "crew \(tag).\(Int.random(in: 0..<1000, using: &rng))"
                try await db.execute("UPDATE step SET crew_note = '\(note)' WHERE id = '\(step.lowercasedText)'")
                expected.stepCrewNote[step] = note
            case 3:
                guard let step = steps[trip]?.randomElement(using: &rng) else { continue }
                try await db.execute("UPDATE step SET label = 'vessel \(tag)' WHERE id = '\(step.lowercasedText)'")
            default:
                let doc = Self.deepJSON(Int.random(in: 65...300, using: &rng), leaf: "vessel \(tag)")
                try await db.execute("UPDATE trip SET doc = '\(doc)' WHERE id = '\(trip.lowercasedText)'")
            }
        }
    }

    static let tripRows = "format('%s|%s|%s|%s|%s|%s|%s', t.id, t.vessel_code, t.name, md5(t.cargo::text), md5(coalesce(t.doc::text, '')), md5(coalesce(t.note, '')), t.sync_clock)"
    static let stepRows = "format('%s|%s|%s|%s|%s|%s|%s', s.id, s.trip_id, s.parent_id, s.label, s.crew_note, s.is_deleted, s.sync_clock)"

    func check(seed: UInt64, shore: DatabaseSession, vessels: [String: DatabaseSession], expected: Expected) async throws {
        for (name, db) in vessels {
            var binds = PostgresBindings()
            binds.append(name)
            let shoreTrips: String = try await shore.rows("SELECT coalesce(string_agg(\(Self.tripRows), E'\\n' ORDER BY t.id), '') FROM trip t WHERE t.vessel_code = $1", binds)[0].decode(String.self)
            let vesselTrips: String = try await db.scalar("SELECT coalesce(string_agg(\(Self.tripRows), E'\\n' ORDER BY t.id), '') FROM trip t")
            XCTAssertEqual(vesselTrips, shoreTrips, "seed \(seed): \(name) holds exactly its trips, with the shore's values and clocks")
            let shoreSteps: String = try await shore.rows("SELECT coalesce(string_agg(\(Self.stepRows), E'\\n' ORDER BY s.id), '') FROM step s JOIN trip t ON t.id = s.trip_id WHERE t.vessel_code = $1", binds)[0].decode(String.self)
            let vesselSteps: String = try await db.scalar("SELECT coalesce(string_agg(\(Self.stepRows), E'\\n' ORDER BY s.id), '') FROM step s")
            XCTAssertEqual(vesselSteps, shoreSteps, "seed \(seed): \(name) holds exactly its steps")
            let ports = "SELECT coalesce(string_agg(format('%s|%s|%s', id, info, sync_clock), E'\\n' ORDER BY id), '') FROM port"
            let shorePorts: String = try await shore.scalar(ports)
            let vesselPorts: String = try await db.scalar(ports)
            XCTAssertEqual(vesselPorts, shorePorts, "seed \(seed): \(name) holds every port")
            let held: String = try await db.scalar("""
                SELECT format('dead %s, waiting %s, pending %s', (SELECT count(*) FROM fleetsync.dead_letter), (SELECT count(*) FROM fleetsync.waiting),
                  (SELECT count(*) FROM fleetsync.outbox) + (SELECT count(*) FROM fleetsync.capture_log))
                """)
            XCTAssertEqual(held, "dead 0, waiting 0, pending 0", "seed \(seed): \(name)")
        }
        let held: String = try await shore.scalar("SELECT format('dead %s, waiting %s', (SELECT count(*) FROM fleetsync.dead_letter), (SELECT count(*) FROM fleetsync.waiting))")
        XCTAssertEqual(held, "dead 0, waiting 0", "seed \(seed): shore")
        let rejected: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.telemetry WHERE kind IN ('rejected_change', 'apply_failure', 'unreadable_event')")
        XCTAssertEqual(rejected, 0, "seed \(seed): nothing refused on the shore")
        // The owner's last write of every owned field stands (on the shore, which every vessel equals).
        let rows = try await shore.rows("SELECT id, name, cargo::text, note FROM trip")
        for row in rows {
            let (id, name, cargo, note) = try row.decode((UUID, String?, String?, String?).self)
            XCTAssertEqual(name, expected.tripName[id], "seed \(seed): trip name")
            XCTAssertEqual(cargo, expected.tripCargo[id], "seed \(seed): trip cargo")
            XCTAssertEqual(note, expected.tripNote[id], "seed \(seed): the vessel's note")
        }
        for row in try await shore.rows("SELECT id, crew_note FROM step WHERE crew_note IS NOT NULL") {
            let (id, note) = try row.decode((UUID, String?).self)
            XCTAssertEqual(note, expected.stepCrewNote[id], "seed \(seed): the vessel's crew note")
        }
        let crewNotes: Int64 = try await shore.scalar("SELECT count(*) FROM step WHERE crew_note IS NOT NULL")
        XCTAssertEqual(crewNotes, Int64(expected.stepCrewNote.count))
        for row in try await shore.rows("SELECT id, info::text FROM port") {
            let (id, info) = try row.decode((UUID, String?).self)
            XCTAssertEqual(info.flatMap { try? JSONParser.parse($0) }, expected.portInfo[id].flatMap { try? JSONParser.parse($0) }, "seed \(seed): port")
        }
    }
}
