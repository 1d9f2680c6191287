package ui

// The messages of node maintenance: cordons and moving VMs between nodes,
// as the audit log and a VM's history and page name them. catalogs merges
// them in.

func maintenanceEN() map[string]string {
	return map[string]string{
		"action.vm.migrate":        "Move a VM to another node",
		"action.vm.migrate.cancel": "Cancel moving a VM to another node",
		"action.node.cordon":       "Take a node out of use for new VMs",
		"action.node.uncordon":     "Put a node back in use for new VMs",
		"vmevent.migrate":          "Move between nodes",
		"vm.migrate.title":         "Move to another node",
		"vm.migrate.hint":          "The VM is stopped and its disks are volumes, so it can start on another node. Nothing is copied. Its serial log starts anew there.",
		"vm.migrate.hint_live":     "The VM keeps running while it moves (live migration): its memory is copied to the other node, then it switches over with a short pause (tens of milliseconds on a quiet network). Its disks are volumes and are not copied. Its serial log starts anew there.",
		"vm.migrate.node":          "Node",
		"vm.migrate.auto":          "Let Cairn choose",
		"vm.migrate.submit":        "Move",
		"vm.migrating":             "Moving from %s to %s while it runs",
		"vm.migrate.progress":      "%d of %d MiB of memory copied, %d MiB left; the guest changes %d MiB/s; expected pause %d ms",
		"vm.migrate.cancel":        "Cancel the move",
		"migphase.planning":        "getting ready",
		"migphase.preparing":       "the new node is getting ready",
		"migphase.transferring":    "copying memory",
		"migphase.switching":       "switching over",
		"migphase.switched":        "switched over, finishing",
		"vmdone.migrate":           "The VM was moved. Start it to run it on its new node.",
		"vmdone.migrate_live":      "The VM is moving to its new node; it keeps running meanwhile.",
		"vmdone.migrate_cancel":    "The move was cancelled; the VM runs on where it was.",
	}
}

func maintenanceZH() map[string]string {
	return map[string]string{
		"action.vm.migrate":        "将虚拟机迁移到另一个节点",
		"action.vm.migrate.cancel": "取消虚拟机迁移",
		"action.node.cordon":       "停止向节点放置新虚拟机",
		"action.node.uncordon":     "恢复向节点放置新虚拟机",
		"vmevent.migrate":          "节点间迁移",
		"vm.migrate.title":         "迁移到另一个节点",
		"vm.migrate.hint":          "虚拟机已停止，其磁盘均为云硬盘，因此可以在另一个节点上启动。不复制任何数据。串口日志将在新节点上重新开始。",
		"vm.migrate.hint_live":     "虚拟机在迁移过程中保持运行（热迁移）：先将其内存复制到另一个节点，然后切换过去，仅短暂停顿（网络空闲时为数十毫秒）。其磁盘均为云硬盘，不会被复制。串口日志将在新节点上重新开始。",
		"vm.migrate.node":          "节点",
		"vm.migrate.auto":          "由 Cairn 选择",
		"vm.migrate.submit":        "迁移",
		"vm.migrating":             "正在从 %s 热迁移到 %s，虚拟机保持运行",
		"vm.migrate.progress":      "已复制内存 %d / %d MiB，剩余 %d MiB；客户机每秒改写 %d MiB；预计暂停 %d 毫秒",
		"vm.migrate.cancel":        "取消迁移",
		"migphase.planning":        "准备中",
		"migphase.preparing":       "目标节点准备中",
		"migphase.transferring":    "正在复制内存",
		"migphase.switching":       "正在切换",
		"migphase.switched":        "已切换，正在收尾",
		"vmdone.migrate":           "虚拟机已迁移。启动后将在新节点上运行。",
		"vmdone.migrate_live":      "虚拟机正在迁移到新节点，期间保持运行。",
		"vmdone.migrate_cancel":    "迁移已取消，虚拟机在原节点上继续运行。",
	}
}
