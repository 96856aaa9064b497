"""Collectors: one subpackage each, registered here by one line (name -> "module:Class")."""

REGISTRY: dict[str, str] = {
    "host": "collectors.host:HostCollector",
    "storage": "collectors.storage:StorageCollector",
    "network": "collectors.network:NetworkCollector",
    "gpu": "collectors.gpu:GpuCollector",
    "snmp": "collectors.snmp:SnmpCollector",
    "inference": "collectors.inference:InferenceCollector",
    "efficiency": "collectors.efficiency:EfficiencyCollector",
    "redfish": "collectors.redfish:RedfishCollector",
    "ipmi": "collectors.ipmi:IpmiCollector",
    "jobs": "collectors.jobs:JobsCollector",
    "facility": "collectors.facility:FacilityCollector",
    "modbus": "collectors.modbus:ModbusCollector",
}
