// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "FleetSync",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "fleetsync", targets: ["fleetsync"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.30.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    ],
    targets: [
        // Pure core: configuration model, events, clocks, merge, planning, wire codec. No I/O.
        .target(name: "FleetSyncCore", dependencies: [
            .product(name: "TOMLKit", package: "TOMLKit"),
        ]),
        // PostgreSQL adapter: catalog, installer, capture triggers, outbox reader, applier.
        .target(name: "FleetSyncPostgres", dependencies: [
            "FleetSyncCore",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // zlib from Debian's zlib1g-dev.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // Exchange transport: framing and compression of wire messages, HTTP client.
        .target(name: "FleetSyncTransport", dependencies: [
            "FleetSyncCore", "CZlib",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // Keys, identity files, sealing (HPKE X-Wing) and access tokens: swift-crypto primitives only.
        .target(name: "FleetSyncCrypto", dependencies: [
            "FleetSyncCore",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The shore: exchange endpoint, routing, retention, fleet status.
        .target(name: "FleetSyncShore", dependencies: [
            "FleetSyncCore", "FleetSyncPostgres", "FleetSyncTransport", "FleetSyncCrypto",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdHTTP2", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The vessel: exchange loop, daemon, status.
        .target(name: "FleetSyncVessel", dependencies: [
            "FleetSyncCore", "FleetSyncPostgres", "FleetSyncTransport", "FleetSyncCrypto",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "fleetsync", dependencies: [
            "FleetSyncCore", "FleetSyncPostgres", "FleetSyncTransport", "FleetSyncShore", "FleetSyncVessel", "FleetSyncCrypto",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Benchmarks: `swift run -c release fleetsync-apply-benchmark`.
        .executableTarget(name: "fleetsync-apply-benchmark", dependencies: [
            "FleetSyncCore", "FleetSyncPostgres", "FleetSyncTestSupport", "FleetSyncCrypto", "FleetSyncTransport",
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ], path: "Benchmarks/ApplyBenchmark"),
        // `benchmarks/fleet-load.sh`: N simulated vessels (real keys, tokens, sealed requests)
        // exchanging against one `fleetsync serve` process and one shore PostgreSQL.
        .executableTarget(name: "fleetsync-fleet-load", dependencies: [
            "FleetSyncCore", "FleetSyncPostgres", "FleetSyncCrypto", "FleetSyncTransport", "FleetSyncShore", "FleetSyncTestSupport",
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ], path: "Benchmarks/FleetLoad"),
        // Throwaway PostgreSQL 15 clusters for tests.
        .target(name: "FleetSyncTestSupport", dependencies: [
            "FleetSyncCore", "FleetSyncPostgres", "FleetSyncCrypto", "FleetSyncTransport",
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ], path: "Tests/FleetSyncTestSupport"),
        .testTarget(name: "FleetSyncCoreTests", dependencies: ["FleetSyncCore", "FleetSyncTransport", "FleetSyncTestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: [
            "FleetSyncCore", "FleetSyncPostgres", "FleetSyncTestSupport", "FleetSyncTransport", "FleetSyncShore", "FleetSyncVessel", "FleetSyncCrypto",
        ]),
        .testTarget(name: "FleetSyncPostgresTests", dependencies: [
            "FleetSyncCore", "FleetSyncPostgres", "FleetSyncTestSupport",
        ]),
    ]
)
